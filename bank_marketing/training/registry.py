"""The registry rule: which candidate becomes the champion, auditable from the version tags.

One registered model, ``bank-marketing``; every candidate is a version; the top three of a
round by validation ROC AUC are tagged ``stage=staging``. The round's challenger is chosen by the
one-standard-error rule (:func:`select`): the simplest family whose validation ROC AUC is within
one standard error of the best. The alias ``champion`` moves to it only if it passes the sanity
floor and beats the current champion, scored on the same validation data, by more than a margin.
The choice, the decision and both scores are written to the challenger's version tags whichever
way it goes.

Why the simplest within the noise rather than the best: a window's validation rows are drawn
from the months the candidates trained on, and the flexible families (trees, MLP) learn those
months' campaigns, which do not come back. Their lead inside a window is usually smaller than the
standard error of the measure (a bootstrap over the validation's call days: see
``metrics.roc_auc_standard_error``), and on the month after the window logistic regression is
usually ahead of them (BENCHMARKS.md, the replay notes).

Which validation rows the two are compared on matters: the champion was trained on an earlier
window that overlaps this round's. The days validated on in the overlap were held out from it too
(a day is on the same side of the split in every window), but they come from the months and
campaigns it learned from, and it was chosen as champion on them, so on them it looks better
than it will do on next month's calls.
They are compared on the validation rows of the months after the champion's as-of month, which
neither model has seen (see :func:`comparison_rows`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from sklearn.pipeline import Pipeline

from bank_marketing.data.fields import LABEL
from bank_marketing.training.families import SIMPLICITY_ORDER
from bank_marketing.training.features import labels
from bank_marketing.training.metrics import classification_metrics
from bank_marketing.training.retries import idempotent
from bank_marketing.training.tracking import MODEL_NAME, CandidateRecord

CHAMPION_ALIAS = "champion"
STAGING_TOP = 3


@dataclass(frozen=True)
class Decision:
    """Whether the challenger replaced the champion, with the scores behind it."""

    promoted: bool
    reason: str
    challenger_version: str
    challenger_roc_auc: float | None
    champion_version: str | None
    champion_roc_auc: float | None
    margin: float
    floor: float
    compared_on: str = "this round's validation data"
    selection: str = ""

    def as_tags(self) -> dict[str, str]:
        return {f"promotion_{key}": str(value) for key, value in asdict(self).items()}


def decide(
    *,
    challenger_version: str,
    challenger_roc_auc: float | None,
    challenger_problem: str | None,
    champion_version: str | None,
    champion_roc_auc: float | None,
    champion_problem: str | None,
    margin: float,
    floor: float,
    compared_on: str = "this round's validation data",
    challenger_validation_roc_auc: float | None = None,
    selection: str = "",
) -> Decision:
    """The promotion rule, as a pure function of the two scores on the same validation data.

    The floor applies to the challenger's ROC AUC on all of the round's validation data
    (``challenger_validation_roc_auc``, when it differs from the compared score).
    """

    def verdict(promoted: bool, reason: str) -> Decision:
        return Decision(
            promoted=promoted,
            reason=reason,
            challenger_version=challenger_version,
            challenger_roc_auc=challenger_roc_auc,
            champion_version=champion_version,
            champion_roc_auc=champion_roc_auc,
            margin=margin,
            floor=floor,
            compared_on=compared_on,
            selection=selection,
        )

    if challenger_roc_auc is not None and not math.isfinite(challenger_roc_auc):
        challenger_problem = challenger_problem or f"ROC AUC is {challenger_roc_auc}"
    if challenger_problem is not None or challenger_roc_auc is None:
        return verdict(False, f"challenger v{challenger_version} is unusable: {challenger_problem}")
    whole = (
        challenger_roc_auc
        if challenger_validation_roc_auc is None
        else challenger_validation_roc_auc
    )
    if whole < floor:
        return verdict(
            False,
            f"challenger v{challenger_version} validation ROC AUC {whole:.4f} is "
            f"below the floor {floor:.4f}",
        )
    if champion_version is None:
        return verdict(True, f"no champion yet: v{challenger_version} becomes the first")
    if champion_problem is not None or champion_roc_auc is None:
        return verdict(
            False,
            f"current champion v{champion_version} could not be scored on this round's "
            f"validation data ({champion_problem}); it stays until an operator looks at it",
        )
    if challenger_roc_auc > champion_roc_auc + margin:
        return verdict(
            True,
            f"challenger v{challenger_version} ROC AUC {challenger_roc_auc:.4f} beats champion "
            f"v{champion_version} {champion_roc_auc:.4f} by more than {margin:.4f} on "
            f"{compared_on}",
        )
    return verdict(
        False,
        f"challenger v{challenger_version} ROC AUC {challenger_roc_auc:.4f} does not beat champion "
        f"v{champion_version} {champion_roc_auc:.4f} by more than {margin:.4f} on {compared_on}: "
        f"the champion stays",
    )


# Fewest rows, and fewest of each label, for a comparison on the champion's unseen months alone.
MIN_UNSEEN_ROWS = 200
MIN_UNSEEN_PER_LABEL = 20


def comparison_rows(
    validation: pd.DataFrame, champion_as_of: str | None, champion_version: str | None = None
) -> tuple[pd.DataFrame, str]:
    """The validation rows the challenger and the champion are compared on, and which they are.

    The rows of months after ``champion_as_of`` (``YYYY-MM``), which the champion never saw, when
    there are at least ``MIN_UNSEEN_ROWS`` of them with ``MIN_UNSEEN_PER_LABEL`` of each label;
    otherwise all of ``validation``, and the description says why.
    """
    everything = f"all {len(validation):,} validation rows"
    if champion_as_of is None:
        return validation, everything
    who = f"v{champion_version}" if champion_version else "the champion"
    months = validation["contact_month"]
    unseen = validation[months > pd.Timestamp(f"{champion_as_of}-01")]
    counts = unseen[LABEL].value_counts()
    if (
        len(unseen) >= MIN_UNSEEN_ROWS
        and len(counts) == 2
        and int(counts.min()) >= MIN_UNSEEN_PER_LABEL
    ):
        first, last = unseen["contact_month"].min(), unseen["contact_month"].max()
        return unseen, (
            f"{len(unseen):,} validation rows from {first:%Y-%m}..{last:%Y-%m}, after "
            f"{who}'s as-of month {champion_as_of}"
        )
    return validation, (
        f"{everything}: only {len(unseen):,} are after {who}'s as-of month {champion_as_of} "
        f"({int(counts.min()) if len(counts) == 2 else 0} in the smaller class), too few to "
        f"compare on alone"
    )


def run_tags(client: MlflowClient, version: ModelVersion) -> dict[str, str]:
    """The tags of the run that logged ``version`` (``as_of``, ``family``, ``window``, ...).

    Empty when the run is gone: the promotion then compares on all validation rows.
    """
    if not version.run_id:
        return {}
    try:
        return dict(idempotent(partial(client.get_run, version.run_id)).data.tags)
    except MlflowException:
        return {}


@dataclass(frozen=True)
class Evaluation:
    """A model version scored on labelled contacts, or why it could not be.

    ``metrics`` are on the whole frame; ``compared_roc_auc`` on the rows the promotion compares
    on, when they are a subset (see :func:`comparison_rows`), else the same as ``roc_auc``.
    """

    version: str
    metrics: dict[str, float] | None
    problem: str | None
    compared_roc_auc: float | None = None

    @property
    def roc_auc(self) -> float | None:
        return None if self.metrics is None else self.metrics["roc_auc"]


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version as it was logged: its sklearn pipeline and its MLmodel signature."""

    pipeline: Pipeline
    signature: ModelSignature | None


def load_registered(client: MlflowClient, version: str, name: str = MODEL_NAME) -> RegisteredModel:
    """Read ``version`` of the registered model from ``client``'s store.

    The artifacts are fetched through ``client``'s tracking URI (a tracking server that proxies
    them included), so the process-wide tracking URI is neither read nor changed.
    """
    uri = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="bank-marketing-model-") as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=folder, tracking_uri=client.tracking_uri
        )
        return RegisteredModel(
            pipeline=mlflow.sklearn.load_model(local),
            signature=mlflow.models.Model.load(local).signature,
        )


def evaluate_version(
    client: MlflowClient, version: str, frame: pd.DataFrame, compared: pd.Index | None = None
) -> Evaluation:
    """Load ``version`` from ``client``'s registry and score it on ``frame``: finite, in [0, 1],
    metrics.

    ``compared`` (a subset of ``frame``'s index) is also scored, for the promotion rule.
    """
    try:
        # A registry whose store is restarting is waited for: the version is not what failed.
        model = idempotent(partial(load_registered, client, version)).pipeline
        probability = np.asarray(model.predict_proba(frame)[:, 1], dtype=np.float64)
    except (MlflowException, OSError, ValueError, KeyError, AttributeError) as error:
        return Evaluation(version, None, f"cannot load or run the model: {error}")
    if not np.all(np.isfinite(probability)):
        return Evaluation(version, None, "probabilities are not all finite")
    if probability.min() < 0 or probability.max() > 1:
        return Evaluation(version, None, "probabilities fall outside [0, 1]")
    metrics = classification_metrics(labels(frame), probability)
    if compared is None:
        return Evaluation(version, metrics, None, metrics["roc_auc"])
    subset = frame.index.isin(compared)
    compared_metrics = classification_metrics(labels(frame[subset]), probability[subset])
    return Evaluation(version, metrics, None, compared_metrics["roc_auc"])


def champion_version(client: MlflowClient, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version the champion alias (or ``alias``) points at; None when it is not set.

    The one lookup of the champion: training, monitoring, deployment and the serving replicas
    all read it through this function or :func:`require_champion`.
    """
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


class NoChampion(LookupError):
    """There is no champion to use: the alias is not set, or the registry cannot be read."""


def require_champion(client: MlflowClient, alias: str = CHAMPION_ALIAS) -> str:
    """The version the champion alias (or ``alias``) points at; :class:`NoChampion` says why
    there is none."""
    where = f"models:/{MODEL_NAME}@{alias} at {client.tracking_uri}"
    try:
        current = champion_version(client, alias)
    except MlflowException as error:
        raise NoChampion(f"cannot read {where}: {error.message}") from error
    if current is None:
        raise NoChampion(f"{where} is not set; train one first (training_job)")
    return str(current.version)


def rank(candidates: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """Best first by validation ROC AUC; ties broken by version, oldest first."""
    return sorted(
        candidates, key=lambda c: (-c.validation_metrics["roc_auc"], int(c.model_version))
    )


@dataclass(frozen=True)
class Selection:
    """The round's challenger and why: the line recorded in its tags and the run's metadata."""

    candidate: CandidateRecord
    reason: str


def select(
    ranked: Sequence[CandidateRecord],
    *,
    standard_errors: float,
    order: Sequence[str] = SIMPLICITY_ORDER,
) -> Selection:
    """The one-standard-error rule: the simplest candidate within the noise of the best.

    ``ranked`` is best first (:func:`rank`); the tolerance is ``standard_errors`` times the
    standard error of the best's validation ROC AUC (its record's, a bootstrap over the
    validation's call days). Among the candidates within it, the first family in ``order`` wins;
    families missing from ``order`` come after those in it. ``standard_errors=0`` takes the best.
    """
    if not ranked:
        raise ValueError("a round needs at least one candidate to choose from")
    if standard_errors < 0:
        raise ValueError(f"standard_errors must be 0 or more, not {standard_errors}")
    unknown = sorted(set(order) - {c.family for c in ranked})
    if unknown:
        raise ValueError(
            f"simplicity_order names {unknown}, which the round has no candidate of; its "
            f"families are {sorted(c.family for c in ranked)}"
        )
    best = ranked[0]
    best_auc = best.validation_metrics["roc_auc"]
    tolerance = standard_errors * best.validation_roc_auc_standard_error
    within = [
        c for c in ranked if c is best or c.validation_metrics["roc_auc"] >= best_auc - tolerance
    ]
    place = {family: index for index, family in enumerate(order)}
    chosen = min(within, key=lambda c: place.get(c.family, len(place)))
    if chosen is best:
        if len(within) == 1:
            reason = (
                f"{best.family} v{best.model_version} has the best validation ROC AUC "
                f"{best_auc:.4f}, and no other candidate is within {standard_errors:g} standard "
                f"error(s) ({tolerance:.4f}) of it"
            )
        else:
            reason = (
                f"{best.family} v{best.model_version} has the best validation ROC AUC "
                f"{best_auc:.4f} and is the simplest of the {len(within)} candidates within "
                f"{standard_errors:g} standard error(s) ({tolerance:.4f}) of it"
            )
        return Selection(best, reason)
    auc = chosen.validation_metrics["roc_auc"]
    return Selection(
        chosen,
        f"{chosen.family} v{chosen.model_version} (validation ROC AUC {auc:.4f}) is the simplest "
        f"of the {len(within)} candidates within {standard_errors:g} standard error(s) "
        f"({tolerance:.4f}) of the best, {best.family} v{best.model_version} ({best_auc:.4f})",
    )


def tag_staging(client: MlflowClient, ranked: Sequence[CandidateRecord], round_id: str) -> None:
    tag = partial(client.set_model_version_tag, MODEL_NAME)
    for place, candidate in enumerate(ranked, start=1):
        idempotent(partial(tag, candidate.model_version, "round", round_id))
        idempotent(partial(tag, candidate.model_version, "round_rank", str(place)))
        if place <= STAGING_TOP:
            idempotent(partial(tag, candidate.model_version, "stage", "staging"))


def apply(client: MlflowClient, decision: Decision) -> None:
    """Write the decision to the challenger's tags and, if promoted, move the alias.

    Each write is tried again while the registry's store restarts (``retries.idempotent``).
    ``promotion_promoted`` is written last, once the alias has moved: a round that fails in
    between (the registry stayed unreachable longer than the retries) leaves a challenger whose
    tags give the decision's reasons but never claim a promotion the alias does not show.
    """
    tags = decision.as_tags()
    promoted = tags.pop("promotion_promoted")
    tag = partial(client.set_model_version_tag, MODEL_NAME, decision.challenger_version)
    for key, value in tags.items():
        idempotent(partial(tag, key, value))
    if decision.promoted:
        idempotent(
            partial(
                client.set_registered_model_alias,
                MODEL_NAME,
                CHAMPION_ALIAS,
                decision.challenger_version,
            )
        )
    idempotent(partial(tag, "promotion_promoted", promoted))
