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
import gc
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from bank_marketing.serving.app import create_app, score_records
from bank_marketing.serving.capture import ServedLog
from bank_marketing.serving.feedback import create_feedback_router
from bank_marketing.serving.metrics import RayTelemetry
from bank_marketing.serving.model import CHAMPION_ALIAS, LoadedModel, ModelState
from bank_marketing.serving.webhook import webhook_router_from_env
from bank_marketing.settings import Settings

log = logging.getLogger("ray.serve")

# Requests per batch; a request carrying more records than this is scored on its own.
MAX_BATCH_SIZE = 32
# No wait: under load, requests queue while a batch is scored and form the next batch anyway,
# while a lone request never waits for company.
BATCH_WAIT_S = 0.0
# How long a rollover, and a graceful shutdown, wait for the answered records still queued to be
# written; within the deployment's graceful_shutdown_timeout_s (20 s).
FLUSH_TIMEOUT_S = 10.0


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
        db_url: str | None = None,
        sample_rate: float | None = None,
        flush_seconds: float = 1.0,
    ) -> None:
        settings = Settings.from_env()
        self.settings = settings
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.max_batch_size = max_batch_size
        self._score_batch.set_max_batch_size(max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.state = ModelState(tracking_uri or settings.mlflow_tracking_uri)
        self.state.load(alias=alias)
        # The challenger scored beside the model, in shadow, when user_config names one.
        self.shadow = ModelState(tracking_uri or settings.mlflow_tracking_uri)
        self.db_url = db_url or settings.db_url
        self.telemetry = RayTelemetry()
        rate = settings.traffic.sample_rate if sample_rate is None else sample_rate
        self.served_log = (
            ServedLog(
                self.db_url,
                sample_rate=rate,
                capacity=settings.traffic.queue_records,
                flush_seconds=flush_seconds,
                telemetry=self.telemetry,
            )
            if rate > 0
            else None
        )
        self._alias_seen = self.state.model.version if self.state.model else None
        self._poller = asyncio.get_running_loop().create_task(self._follow_alias())
        _freeze_heap()

    def __serve_build_asgi_app__(self) -> FastAPI:
        inputs = self.state.model.inputs if self.state.model else None
        # Grafana's alerts land here too: BANK_MARKETING_WEBHOOK_TOKEN and the monitoring DB
        # (BANK_MARKETING_DB_URL) come from the replica's environment, or from the files their
        # *_FILE variables name (how a rollout hands secrets over: serving/rollout.py).
        options: dict[str, Any] = {
            "scorer": self.score,
            "webhook": webhook_router_from_env(),
            "feedback": create_feedback_router(self.db_url, self.settings.webhook_token),
            "served_log": self.served_log,
            "shadow": self.shadow,
            "telemetry": self.telemetry,
            # Serve's own middleware puts x-request-id on every response.
            "echo_request_id": False,
        }
        if inputs:
            options["inputs"] = inputs
        return create_app(self.state, **options)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve a pinned version (``model_version``), or the alias's when it is unset, with
        ``shadow_version`` scored beside it when set.

        What was answered before the switch is written first, so a rollover loses nothing.
        """
        if self.served_log is not None and not self.served_log.flush(FLUSH_TIMEOUT_S):
            log.warning(
                "rollover: %d answered record(s) still queued (the monitoring database is slow "
                "or down); they stay queued",
                self.served_log.pending,
            )
        version = config.get("model_version")
        if self.state.load(version=str(version) if version else None, alias=self.alias) is None:
            log.warning("keeping the served model: %s", self.state.last_error)
        shadow = config.get("shadow_version")
        if not shadow:
            self.shadow.unload()
        elif self.shadow.load(version=str(shadow)) is None:
            # The shadow never costs an answer: without it the service answers as before.
            log.warning("no shadow model: %s", self.shadow.last_error)
            self.shadow.unload()
        _freeze_heap()

    def __del__(self) -> None:
        """Serve's graceful shutdown: write what was answered and is still queued."""
        served_log = getattr(self, "served_log", None)
        if served_log is not None:
            served_log.close(FLUSH_TIMEOUT_S)

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


def _freeze_heap() -> None:
    """Leave the loaded models and libraries out of Python's full garbage collections.

    A replica holds some 400,000 objects once a model is loaded, and a full collection of them
    takes about 180 ms, all of it holding the GIL. Answers queued for ``served_predictions``
    live for up to a second, long enough to reach the oldest generation, so without this a
    replica keeping its traffic would pause for a full collection every few seconds under load.
    Freezing after each load leaves only what came after it to collect. A replaced model is
    still freed by reference counting; only cyclic garbage from before a freeze stays.
    """
    gc.collect()
    gc.freeze()


def service_args(args: dict[str, Any]) -> dict[str, Any]:
    """PredictionService's arguments from the application's (string-valued) args."""
    return {
        "tracking_uri": args.get("tracking_uri"),
        "alias": str(args.get("alias", CHAMPION_ALIAS)),
        "poll_seconds": float(args.get("poll_seconds", 30.0)),
        "max_batch_size": int(args.get("max_batch_size", MAX_BATCH_SIZE)),
        "batch_wait_s": float(args.get("batch_wait_s", BATCH_WAIT_S)),
        "db_url": args.get("db_url"),
        "sample_rate": float(args["sample_rate"]) if "sample_rate" in args else None,
        "flush_seconds": float(args.get("flush_seconds", 1.0)),
    }


def app_builder(args: dict[str, Any]) -> serve.Application:
    """``serve run``/``serve deploy`` entry point; args: tracking_uri, alias, poll_seconds,
    max_batch_size, batch_wait_s, db_url, sample_rate (these two default to BANK_MARKETING_DB_URL
    and BANK_MARKETING_SERVED_SAMPLE_RATE), flush_seconds (how often kept answers are written)."""
    return PredictionService.bind(**service_args(args))
