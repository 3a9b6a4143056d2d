"""Training windows: the N months up to and including an as-of month, split for validation."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from bank_marketing.data.fields import LABEL

TRAIN, VALIDATION = "train", "validation"


class TrainingDataError(ValueError):
    """The window cannot train a model (no rows, one class, too few rows to split)."""


def window_months(as_of: pd.Timestamp, months: int) -> list[pd.Timestamp]:
    """The ``months`` calendar months ending with ``as_of``, oldest first."""
    if months < 1:
        raise ValueError(f"a window has at least one month, not {months}")
    return list(pd.date_range(end=as_of, periods=months, freq="MS"))


def describe(months: list[pd.Timestamp]) -> str:
    return f"{months[0]:%Y-%m}..{months[-1]:%Y-%m} ({len(months)} month(s))"


def assemble_window(
    contacts_by_month: Mapping[str, pd.DataFrame], as_of: pd.Timestamp, months: int
) -> pd.DataFrame:
    """The contacts of the window, month after month, each month in file order. Months before
    the data's first are empty.

    ``contacts_by_month`` maps partition keys (``YYYY-MM-DD``) to months of contacts; a key after
    ``as_of`` is ignored, so later data can never leak into training. Months read from the whole
    file keep its line numbers; months that landed as files of their own number their lines from
    2 each, so a window holding any of them is numbered 2..n+1 instead, as the window's lines
    would be in one CSV file (same rows, same order).
    """
    wanted = {f"{month:%Y-%m-%d}" for month in window_months(as_of, months)}
    frames = [frame for key, frame in sorted(contacts_by_month.items()) if key in wanted]
    if not frames:
        raise TrainingDataError(
            f"training window {describe(window_months(as_of, months))} has no stored months"
        )
    window = pd.concat(frames)
    if not window.index.is_unique:
        # Numbered as the lines of the window written out as one CSV file under one header.
        window.index = pd.RangeIndex(2, len(window) + 2, name="line")
    return window


def call_days(frame: pd.DataFrame) -> pd.Series:
    """Each contact's call day (``YYYY-MM-DD``), from its recovered month and its ``day``."""
    missing = [name for name in ("contact_month", "day") if name not in frame.columns]
    if missing:
        raise ValueError(
            f"call days need each contact's recovered month and day; the frame has no "
            f"{' or '.join(missing)} column (the contacts asset adds contact_month)"
        )
    return frame["contact_month"].dt.strftime("%Y-%m-") + frame["day"].astype(int).map(
        "{:02d}".format
    )


def split_window(
    frame: pd.DataFrame,
    validation_share: float,
    seed: int,
    where: str,
    by: str = "row",
) -> pd.DataFrame:
    """``frame`` with a ``split`` column, stratified by the label and seeded.

    ``by="day"``: all calls of a day (:func:`call_days`) land on the same side. Each month's days
    are split on their own, through a stratified group split into ``round(1 / validation_share)``
    folds whose first is the validation part (so its share is the nearest ``1/k``). A month's
    split depends only on its own calls, the seed and the share, so a day is on the same side in
    every window that holds it: a day one round validates on, no other round trains on. A month
    with fewer call days than folds (2009-01 has 3) goes to training whole.
    ``by="row"``: a plain row split of the whole window.
    Raises :class:`TrainingDataError` naming the window when it cannot train a model.
    """
    counts = frame[LABEL].value_counts()
    if frame.empty:
        raise TrainingDataError(f"training window {where} has no contacts")
    if len(counts) < 2:
        raise TrainingDataError(
            f"training window {where} has only {counts.index[0]!r} labels ({len(frame)} rows): "
            f"a model needs both classes; widen the window"
        )
    smallest = int(counts.min())
    if smallest < 2 or round(len(frame) * validation_share) < 2:
        raise TrainingDataError(
            f"training window {where} is too small to split ({len(frame)} rows, "
            f"{smallest} in the smaller class); widen the window"
        )
    if by not in ("day", "row"):
        raise ValueError(f"split by 'day' or 'row', not {by!r}")
    if by == "row":
        train_index, _ = train_test_split(
            frame.index,
            test_size=validation_share,
            stratify=frame[LABEL],
            random_state=seed,
        )
    else:
        train_index = _train_days(frame, validation_share, seed, where)
    split = pd.Series(VALIDATION, index=frame.index)
    split[train_index] = TRAIN
    labels_per_split = frame[LABEL].groupby(split).nunique()
    if len(labels_per_split) < 2 or (labels_per_split < 2).any():
        raise TrainingDataError(
            f"training window {where} is too small to split: with {smallest} row(s) in the "
            f"smaller class, one split would hold a single label; widen the window"
        )
    return frame.assign(split=split)


def _train_days(frame: pd.DataFrame, validation_share: float, seed: int, where: str) -> pd.Index:
    """The index of the training rows: each month's call days split on their own."""
    folds = max(2, round(1 / validation_share))
    days = call_days(frame)
    held_out = []
    for _, month in frame.groupby("contact_month", sort=True):
        groups = days[month.index]
        if groups.nunique() < folds:
            continue
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # A month whose rarer label has fewer rows than folds is still split by its days.
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            _, validation = next(splitter.split(month, month[LABEL], groups.to_numpy()))
        held_out.append(month.index[validation])
    if not held_out:
        raise TrainingDataError(
            f"training window {where} has no month with {folds} call days or more: too few to "
            f"hold whole days out for validation; widen the window"
        )
    return frame.index.difference(pd.Index(np.concatenate(held_out)), sort=False)
