"""The Ray Serve deployment: the HTTP app on replicas that batch requests and follow the champion.

The served version changes two ways: ``production_deployment`` (a Dagster asset) sets
``user_config: {model_version: N}``, which Serve applies replica by replica through
``reconfigure``; and each replica checks the registry alias every ``poll_seconds`` as a fallback,
switching when the alias moves. With two or more replicas no request fails during a switch.

    serve run bank_marketing.serving.deployment:app_builder tracking_uri=sqlite:///...
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from fastapi import FastAPI
from ray import serve

from bank_marketing.serving.app import create_app, score_records
from bank_marketing.serving.model import CHAMPION_ALIAS, LoadedModel, ModelState

log = logging.getLogger("ray.serve")

MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.002


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
    ) -> None:
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.state = ModelState(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        self.state.load(alias=alias)
        self._alias_seen = self.state.model.version if self.state.model else None
        self._poller = asyncio.get_running_loop().create_task(self._follow_alias())

    def __serve_build_asgi_app__(self) -> FastAPI:
        inputs = self.state.model.inputs if self.state.model else None
        if inputs:
            return create_app(self.state, inputs=inputs, scorer=self.score)
        return create_app(self.state, scorer=self.score)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve a pinned version (``model_version``), or the alias's when it is unset."""
        version = config.get("model_version")
        if self.state.load(version=str(version) if version else None, alias=self.alias) is None:
            log.warning("keeping the served model: %s", self.state.last_error)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def score(
        self, requests: list[list[dict[str, Any]]]
    ) -> list[tuple[LoadedModel, list[float]]]:
        """Concurrent requests scored as one frame by one model, then split back."""
        model = self.state.model
        if model is None:
            raise RuntimeError(f"no model is loaded: {self.state.problem}")
        flat = [record for records in requests for record in records]
        probabilities = score_records(model, flat)
        answers, start = [], 0
        for records in requests:
            answers.append((model, probabilities[start : start + len(records)]))
            start += len(records)
        return answers

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


def app_builder(args: dict[str, str]) -> serve.Application:
    """``serve run``/``serve deploy`` entry point; args: tracking_uri, alias, poll_seconds."""
    return PredictionService.bind(
        tracking_uri=args.get("tracking_uri"),
        alias=args.get("alias", CHAMPION_ALIAS),
        poll_seconds=float(args.get("poll_seconds", 30.0)),
    )
