"""Contacts the tests send: the contract's example record, and distinct variants of it."""

from __future__ import annotations

from typing import Any

from bank_marketing.serving.contract import EXAMPLE_RECORD


def records(count: int, start: int = 0) -> list[dict[str, Any]]:
    """``count`` distinct valid records, numbered from ``start``: ages and balances vary, so their
    probabilities do too, and stay within the service's bounds (contract.SERVING_BOUNDS) for any
    ``start``: ages 20 to 79, balances 0 to 249,900."""
    return [
        {**EXAMPLE_RECORD, "age": 20 + n % 60, "balance": 100 * n % 250_000}
        for n in range(start, start + count)
    ]
