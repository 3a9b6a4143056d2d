"""Keeping what the service answers: queued on the request path, written in batches by a thread.

A request only appends its answer to an in-memory queue (no I/O, no serialization); a writer
thread turns queued answers into ``served_predictions`` rows, scores them with the shadow
challenger when one runs, and inserts them in one transaction at least every ``flush_seconds``.
So a slow or stopped database never slows an answer down.

What cannot be kept is counted and logged, never dropped silently:

- while the database is unreachable the writer keeps its batch and retries with a growing pause
  (up to ``max_retry_seconds``), and writing resumes by itself once the database is back;
- answers keep queueing meanwhile, up to ``capacity`` records; past that, new answers are
  dropped, counted (``dropped``) and logged once per ``warn_every_s``;
- a record whose request id and position are already stored (a client reusing its
  ``x-request-id``) keeps its first answer; the repeat is counted as ``duplicate``;
- :meth:`ServedLog.close` (graceful shutdown) and :meth:`ServedLog.flush` (rollover) write what
  is queued; what still cannot be written when their timeout passes is counted as dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from bank_marketing.monitoring import served, store
from bank_marketing.serving.model import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One answered request: what ``POST /predict`` returned, and to whom."""

    request_id: str
    received_at: datetime
    model: LoadedModel
    records: list[dict[str, Any]]
    probabilities: list[float]
    latency_ms: float
    # The challenger running in shadow when the request was answered, if any.
    shadow: LoadedModel | None = None


class Telemetry(Protocol):
    """Where the service's counters go (Prometheus on Ray; nowhere by default)."""

    def answered(self, route: str, status: int, model_version: str, latency_ms: float) -> None: ...

    def scored(self, model_version: str, role: str, probabilities: list[float]) -> None: ...

    def served_records(self, outcome: str, count: int) -> None: ...

    def queued(self, records: int) -> None: ...


class NoTelemetry:
    """Counts nothing."""

    def answered(self, route: str, status: int, model_version: str, latency_ms: float) -> None:
        pass

    def scored(self, model_version: str, role: str, probabilities: list[float]) -> None:
        pass

    def served_records(self, outcome: str, count: int) -> None:
        pass

    def queued(self, records: int) -> None:
        pass


@dataclass
class Counts:
    """Records by fate since the log started: the figures the service exports."""

    kept: int = 0
    dropped: int = 0
    duplicate: int = 0
    sampled_out: int = 0


class ServedLog:
    """The writer of ``served_predictions`` for one replica.

    ``db_url`` is the monitoring database; ``sample_rate`` the share of requests kept (decided
    per request, so a request's records are kept together or not at all).
    """

    def __init__(
        self,
        db_url: str,
        *,
        sample_rate: float = 1.0,
        capacity: int = 20_000,
        flush_seconds: float = 1.0,
        batch_records: int = 5_000,
        max_retry_seconds: float = 5.0,
        warn_every_s: float = 10.0,
        telemetry: Telemetry | None = None,
        engine_factory: Callable[[str], sa.Engine] = store.connect,
    ) -> None:
        self.db_url = db_url
        self.sample_rate = sample_rate
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.batch_records = batch_records
        self.max_retry_seconds = max_retry_seconds
        self.warn_every_s = warn_every_s
        self.telemetry = telemetry or NoTelemetry()
        self.counts = Counts()
        self._engine_factory = engine_factory
        self._engine: sa.Engine | None = None
        self._queue: deque[Answer] = deque()
        self._queued_records = 0
        # Rows taken from the queue that a failed write left unwritten, retried first.
        self._retry: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._writing = False
        self._closed = False
        self._last_warning: dict[str, float] = {}
        self._pending_drops = 0
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------------------

    def keep(self, answer: Answer) -> None:
        """Queue ``answer`` to be written; never blocks on the database."""
        records = len(answer.records)
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            self.counts.sampled_out += records
            return
        with self._lock:
            if self._closed or self._queued_records + records > self.capacity:
                self.counts.dropped += records
                self._pending_drops += records
                dropped = True
            else:
                self._queue.append(answer)
                self._queued_records += records
                dropped = False
                if self._queued_records >= self.batch_records:
                    self._wake.notify()
        if dropped:
            self.telemetry.served_records("dropped", records)
            self._warn_drops("the queue is full")

    @property
    def pending(self) -> int:
        """Records queued or waiting for a retry, not yet written."""
        with self._lock:
            return self._queued_records + len(self._retry)

    # -- flushing ------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything queued now; False when some is still unwritten after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._wake.notify()
            while self._queue or self._retry or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.notify()
                self._idle.wait(min(remaining, 0.1))
        return True

    def close(self, timeout_s: float = 10.0) -> int:
        """Write what is queued, stop the writer, and return the records it could not write.

        Those are counted as dropped and logged: after close nothing is kept any more.
        """
        written = self.flush(timeout_s)
        with self._lock:
            self._closed = True
            lost = self._queued_records + len(self._retry)
            self._queue.clear()
            self._queued_records = 0
            self._retry = []
            self._wake.notify()
        self._thread.join(timeout=max(timeout_s, 1.0))
        if lost:
            self.counts.dropped += lost
            self.telemetry.served_records("dropped", lost)
            log.error(
                "%d answered record(s) could not be written to %s before shutdown and are lost",
                lost,
                self._describe(),
            )
        elif not written:
            log.warning("the served-records writer did not settle within %.0f s", timeout_s)
        if self._engine is not None:
            self._engine.dispose()
        return lost

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while True:
            with self._lock:
                if not self._closed and not self._retry and not self._queue:
                    self._wake.wait(self.flush_seconds)
                if self._closed:
                    return
                batch = self._take()
                retry, self._retry = self._retry, []
                self._writing = bool(batch or retry)
            rows = retry
            try:
                rows = retry + self._live_rows(batch) + self._shadow_rows(batch)
                if rows:
                    self._write(rows)
                    if failures:
                        log.warning(
                            "writing answered records to %s works again after %d failed attempt(s)",
                            self._describe(),
                            failures,
                        )
                failures = 0
            except sa.exc.SQLAlchemyError as error:
                failures += 1
                with self._lock:
                    self._retry = rows + self._retry
                self._warn(
                    "write",
                    f"cannot write answered records to {self._describe()} (attempt {failures}): "
                    f"{type(error).__name__}: {str(error).strip().splitlines()[0]}; "
                    f"{self.pending} record(s) held, retrying",
                )
                self._pause(min(self.max_retry_seconds, 0.25 * 2**failures))
            except Exception:
                # Not the database: these rows would fail again, so they are counted and let go
                # rather than retried for ever.
                log.exception("%d answered record(s) cannot be written and are dropped", len(rows))
                self.counts.dropped += len(rows)
                self.telemetry.served_records("dropped", len(rows))
            finally:
                with self._lock:
                    self._writing = False
                    self._idle.notify_all()
                self.telemetry.queued(self.pending)
                if self._pending_drops:
                    self._warn_drops("the queue is full")

    def _take(self) -> list[Answer]:
        """Answers for one write, up to ``batch_records`` records (the lock is held)."""
        batch, records = [], 0
        while self._queue and records < self.batch_records:
            answer = self._queue.popleft()
            batch.append(answer)
            records += len(answer.records)
        self._queued_records -= records
        return batch

    @staticmethod
    def _live_rows(batch: list[Answer]) -> list[dict[str, Any]]:
        return [
            {
                "request_id": answer.request_id,
                "record": index,
                "role": served.LIVE,
                "received_at": answer.received_at,
                "model_version": answer.model.version,
                "inputs": record,
                "probability": probability,
                "latency_ms": answer.latency_ms,
            }
            for answer in batch
            for index, (record, probability) in enumerate(
                zip(answer.records, answer.probabilities, strict=True)
            )
        ]

    def _shadow_rows(self, batch: list[Answer]) -> list[dict[str, Any]]:
        """The shadow challenger's scores for the batch's answers, one model at a time."""
        by_model: dict[str, tuple[LoadedModel, list[Answer]]] = {}
        for answer in batch:
            if answer.shadow is not None:
                by_model.setdefault(answer.shadow.version, (answer.shadow, []))[1].append(answer)
        rows: list[dict[str, Any]] = []
        for model, answers in by_model.values():
            records = [record for answer in answers for record in answer.records]
            try:
                probabilities = model.predict_records(records).tolist()
            except Exception:  # the shadow must never cost the live rows
                log.exception("the shadow model v%s could not score %d record(s); their shadow "
                              "rows are dropped", model.version, len(records))  # fmt: skip
                self.counts.dropped += len(records)
                self.telemetry.served_records("dropped", len(records))
                continue
            self.telemetry.scored(model.version, served.SHADOW, probabilities)
            position = 0
            for answer in answers:
                for index, record in enumerate(answer.records):
                    rows.append(
                        {
                            "request_id": answer.request_id,
                            "record": index,
                            "role": served.SHADOW,
                            "received_at": answer.received_at,
                            "model_version": model.version,
                            "inputs": record,
                            "probability": probabilities[position],
                            "latency_ms": None,
                        }
                    )
                    position += 1
        return rows

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._engine is None:
            self._engine = self._engine_factory(self.db_url)
        new = served.insert_served(self._engine, rows)
        repeated = len(rows) - new
        self.counts.kept += new
        self.telemetry.served_records("kept", new)
        if repeated:
            self.counts.duplicate += repeated
            self.telemetry.served_records("duplicate", repeated)
            self._warn(
                "duplicate",
                f"{repeated} answered record(s) reused a stored request id and position; the "
                f"first answer is kept (send a new x-request-id per request)",
            )

    def _pause(self, seconds: float) -> None:
        with self._lock:
            if not self._closed:
                self._wake.wait(seconds)

    # -- logging -------------------------------------------------------------------------------

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, -self.warn_every_s) >= self.warn_every_s:
            self._last_warning[kind] = now
            log.warning(message)

    def _warn_drops(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get("drop", -self.warn_every_s) < self.warn_every_s:
            return
        with self._lock:
            dropped, self._pending_drops = self._pending_drops, 0
        self._last_warning["drop"] = now
        log.warning(
            "%d answered record(s) dropped, not kept: %s (%d records held while %s cannot be "
            "written; %d dropped since start)",
            dropped,
            reason,
            self.capacity,
            self._describe(),
            self.counts.dropped,
        )

    def _describe(self) -> str:
        return sa.make_url(self.db_url).render_as_string(hide_password=True)
