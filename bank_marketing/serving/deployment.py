"""The Ray Serve deployment: the HTTP app on replicas that batch requests and follow the champion.

The served version changes two ways: ``production_deployment`` (a Dagster asset) sets
``user_config: {model_version: N}``, which Serve applies replica by replica through
``reconfigure``; and each replica checks the registry alias every ``poll_seconds`` as a fallback,
switching when the alias moves. With two or more replicas no request fails during a switch.

Throughput comes from three things (BENCHMARKS.md, "Serving"): records are featurized by the
model's compiled featurizer rather than through a DataFrame; concurrent small requests are scored
as one batch (no waiting: whatever queued while the previous batch ran); and Ray's throughput
mode, where HAProxy hands requests straight to the replicas' own HTTP servers instead of through
Serve's Python proxy. That mode is a property of the cluster, not of this app: export
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1`` before ``ray start`` or
``serve run``. The app behaves the same with or without it.

    serve run bank_marketing.serving.deployment:app_builder tracking_uri=sqlite:///...
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from bank_marketing.serving.app import create_app, score_records
from bank_marketing.serving.model import CHAMPION_ALIAS, LoadedModel, ModelState
from bank_marketing.serving.webhook import webhook_router_from_env
from bank_marketing.settings import Settings

log = logging.getLogger("ray.serve")

# Requests per batch; a request carrying more records than this is scored on its own.
MAX_BATCH_SIZE = 32
# No wait: under load, requests queue while a batch is scored and form the next batch anyway,
# while a lone request never waits for company.
BATCH_WAIT_S = 0.0


@serve.deployment(
    name="PredictionService",
    num_replicas=2,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    health_check_period_s=5,
)
@serve.ingress()
class PredictionService:
    """Scores contacts with a registered version of bank-marketing."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        alias: str = CHAMPION_ALIAS,
        poll_seconds: float = 30.0,
        max_batch_size: int = MAX_BATCH_SIZE,
        batch_wait_s: float = BATCH_WAIT_S,
    ) -> None:
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.max_batch_size = max_batch_size
        self._score_batch.set_max_batch_size(max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.state = ModelState(tracking_uri or Settings.from_env().mlflow_tracking_uri)
        self.state.load(alias=alias)
        self._alias_seen = self.state.model.version if self.state.model else None
        self._poller = asyncio.get_running_loop().create_task(self._follow_alias())

    def __serve_build_asgi_app__(self) -> FastAPI:
        inputs = self.state.model.inputs if self.state.model else None
        # Grafana's alerts land here too: BANK_MARKETING_WEBHOOK_TOKEN and the monitoring DB
        # (BANK_MARKETING_DB_URL) come from the replica's environment.
        webhook = webhook_router_from_env()
        if inputs:
            return create_app(self.state, inputs=inputs, scorer=self.score, webhook=webhook)
        return create_app(self.state, scorer=self.score, webhook=webhook)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve a pinned version (``model_version``), or the alias's when it is unset."""
        version = config.get("model_version")
        if self.state.load(version=str(version) if version else None, alias=self.alias) is None:
            log.warning("keeping the served model: %s", self.state.last_error)

    async def score(self, records: list[dict[str, Any]]) -> tuple[LoadedModel, list[float]]:
        """Probabilities for one request's records, batched with concurrent small requests."""
        if len(records) > self.max_batch_size:
            model = self._model()
            return model, score_records(model, records)
        return await self._score_batch(records)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _score_batch(
        self, requests: list[list[dict[str, Any]]]
    ) -> list[tuple[LoadedModel, list[float]]]:
        """Concurrent requests scored together by one model, then split back."""
        model = self._model()
        flat = [record for records in requests for record in records]
        probabilities = score_records(model, flat)
        answers, start = [], 0
        for records in requests:
            answers.append((model, probabilities[start : start + len(records)]))
            start += len(records)
        return answers

    def _model(self) -> LoadedModel:
        model = self.state.model
        if model is None:
            raise RuntimeError(f"no model is loaded: {self.state.problem}")
        return model

    async def _follow_alias(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                current = await asyncio.to_thread(self.state.alias_version, self.alias)
            except Exception as error:  # the registry may be briefly unreachable; retry later
                log.warning("cannot read alias %s: %s", self.alias, error)
                continue
            if current != self._alias_seen:
                self._alias_seen = current
                await asyncio.to_thread(self.state.load, current)


def service_args(args: dict[str, Any]) -> dict[str, Any]:
    """PredictionService's arguments from the application's (string-valued) args."""
    return {
        "tracking_uri": args.get("tracking_uri"),
        "alias": str(args.get("alias", CHAMPION_ALIAS)),
        "poll_seconds": float(args.get("poll_seconds", 30.0)),
        "max_batch_size": int(args.get("max_batch_size", MAX_BATCH_SIZE)),
        "batch_wait_s": float(args.get("batch_wait_s", BATCH_WAIT_S)),
    }


def app_builder(args: dict[str, Any]) -> serve.Application:
    """``serve run``/``serve deploy`` entry point; args: tracking_uri, alias, poll_seconds,
    max_batch_size, batch_wait_s."""
    return PredictionService.bind(**service_args(args))
