"""The service's Prometheus series, exported by Ray with each node's metrics (``ray_`` prefix).

Ray adds the labels ``application``, ``deployment`` and ``replica``; these add the served model's
version, so a rollover shows as one version's series ending and the next one's starting:

- ``ray_bank_marketing_requests_total{model_version, route, status}``
- ``ray_bank_marketing_request_latency_ms_bucket{model_version, route, le}`` (and ``_sum``,
  ``_count``): time in the app, from the request's arrival to the end of its answer
- ``ray_bank_marketing_probability_bucket{model_version, role, le}``: the predicted probability,
  role ``live`` (returned) or ``shadow`` (the challenger's)
- ``ray_bank_marketing_served_records_total{outcome}``: records ``kept`` in served_predictions,
  ``dropped`` (not kept: the database was unreachable past the queue's capacity) or
  ``duplicate`` (a reused request id)
- ``ray_bank_marketing_served_queue``: records waiting to be written
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from ray.serve import metrics

LATENCY_MS_BOUNDARIES = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
PROBABILITY_BOUNDARIES = [round(0.05 * step, 2) for step in range(1, 20)]


class RayTelemetry:
    """:class:`~bank_marketing.serving.capture.Telemetry` on ``ray.serve.metrics``."""

    def __init__(self) -> None:
        self._requests = metrics.Counter(
            "bank_marketing_requests",
            description="Requests answered, by served model version, route and HTTP status.",
            tag_keys=("model_version", "route", "status"),
        )
        self._latency = metrics.Histogram(
            "bank_marketing_request_latency_ms",
            description="Time from a request's arrival to its answer, in milliseconds.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model_version", "route"),
        )
        self._probability = metrics.Histogram(
            "bank_marketing_probability",
            description="Predicted probability of subscribing, by model version and role.",
            boundaries=PROBABILITY_BOUNDARIES,
            tag_keys=("model_version", "role"),
        )
        self._records = metrics.Counter(
            "bank_marketing_served_records",
            description="Answered records kept in served_predictions, dropped, or duplicate.",
            tag_keys=("outcome",),
        )
        self._queue = metrics.Gauge(
            "bank_marketing_served_queue",
            description="Answered records waiting to be written to served_predictions.",
        )

    def answered(self, route: str, status: int, model_version: str, latency_ms: float) -> None:
        tags = {"model_version": model_version, "route": route}
        self._requests.inc(tags={**tags, "status": str(status)})
        self._latency.observe(latency_ms, tags=tags)

    def scored(self, model_version: str, role: str, probabilities: list[float]) -> None:
        tags = {"model_version": model_version, "role": role}
        for probability in probabilities:
            self._probability.observe(probability, tags=tags)

    def served_records(self, outcome: str, count: int) -> None:
        if count:
            self._records.inc(count, tags={"outcome": outcome})

    def queued(self, records: int) -> None:
        self._queue.set(records)


def exported_text(timeout_s: float = 10.0) -> str:
    """What this node's Ray metrics export answers now (Prometheus text; Ray must be running).

    Ray exports each replica's series a few seconds after they change, so a reader waiting for
    its own traffic polls this until the sums it expects are there.
    """
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s).text


def exported_sum(text: str, sample: str, **labels: str) -> float:
    """The sum of the values of ``sample`` (a sample name: ``_total``, ``_bucket``, ``_count``
    included) over every series in ``text`` whose labels include ``labels``: over the replicas,
    and over the applications unless ``application`` is given."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == sample
        and all(found.labels.get(key) == value for key, value in labels.items())
    )
