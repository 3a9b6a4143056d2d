"""MLflow writes tried again while the store behind it restarts.

A restart of MLflow's backend database makes every call answer TEMPORARILY_UNAVAILABLE until the
server is back, usually within seconds. A write that sets a tag, an alias or a run's status to a
value can safely be sent again, as can a read, so the training round tries such calls again for a
while instead of failing, or of leaving the registry half-written, on a short outage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE, ErrorCode

# How long an idempotent write is tried again before the error reaches the caller.
RETRY_SECONDS = 60.0
T = TypeVar("T")


def unavailable(error: BaseException) -> bool:
    """Whether MLflow said its store is temporarily unavailable (the database went away)."""
    return isinstance(error, MlflowException) and error.error_code == ErrorCode.Name(
        TEMPORARILY_UNAVAILABLE
    )


def idempotent(call: Callable[[], T]) -> T:
    """Run ``call`` (a read, or a write that sets a value), again while the store is temporarily
    unavailable, for ``RETRY_SECONDS``; then its error reaches the caller."""
    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception(unavailable),
        wait=tenacity.wait_exponential(multiplier=0.25, max=4.0),
        stop=tenacity.stop_after_delay(RETRY_SECONDS),
        reraise=True,
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity returns or raises")
