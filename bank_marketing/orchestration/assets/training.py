"""The training assets, partitioned by as-of month: a window of contacts, five candidates trained
in parallel and tracked in MLflow, the champion chosen by the registry rule, and its test score."""

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bank_marketing.data.schemas import Contacts
from bank_marketing.orchestration.assets.contacts import raw_source
from bank_marketing.orchestration.assets.metadata import (
    mlflow_model_version_url,
    mlflow_run_links,
    rounded,
)
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.resources import ModelInputs
from bank_marketing.training import registry
from bank_marketing.training.config import (
    CandidateParams,
    LogisticRegressionParams,
    MLPParams,
    PromotionRule,
    RandomForestParams,
    SVCParams,
    WindowSplit,
    XGBoostParams,
)
from bank_marketing.training.retries import idempotent
from bank_marketing.training.tracking import (
    MODEL_NAME,
    CandidateRecord,
    frame_digest,
    log_candidate,
    redacted,
)
from bank_marketing.training.windows import (
    TRAIN,
    VALIDATION,
    TrainingDataError,
    assemble_window,
    describe,
    split_window,
    window_months,
)

GROUP = "training"
TRAINABLE_CHECK = "trainable"
CHAMPION_CHECK = "champion_is_sound"

# The window's length is run configuration, so the mapping reaches back to the first month and
# the asset keeps the last N; nothing after the as-of month is ever loaded.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    contacts_up_to_as_of = dg.TimeWindowPartitionMapping(
        start_offset=-(len(monthly_partitions.get_partition_keys()) - 1),
        end_offset=0,
        allow_nonexistent_upstream_partitions=True,
    )
    month_after_as_of = dg.TimeWindowPartitionMapping(
        start_offset=1, end_offset=1, allow_nonexistent_upstream_partitions=True
    )


class TrainingSet(Contacts):
    """Contacts of a training window, each assigned to the train or the validation split."""

    split: pa.typing.Series[str] = pa.Field(
        isin=[TRAIN, VALIDATION], description="Which part of the stratified split the row is in."
    )

    @pa.dataframe_check(description="Both labels occur in the train and in the validation split.")
    @classmethod
    def both_classes_in_each_split(cls, frame: pd.DataFrame) -> bool:
        return (
            bool((frame.groupby("split")["y"].nunique() == 2).all())
            and frame["split"].nunique() == 2
        )


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    TrainingSetType = pandera_schema_to_dagster_type(TrainingSet)


class TrainingSetConfig(dg.Config, WindowSplit):
    """The round's window and split (defaults in ``bank_marketing.training.config``)."""


def _contacts_by_month(
    context: dg.AssetExecutionContext, loaded: Any, input_name: str = "contacts"
) -> dict[str, pd.DataFrame]:
    """The IO manager gives None, one frame or a dict for 0, 1 or more partitions."""
    keys = context.asset_partition_keys_for_input(input_name)
    if loaded is None:
        return {}
    if isinstance(loaded, pd.DataFrame):
        return {keys[0]: loaded}
    return dict(loaded)


@dg.asset(
    group_name=GROUP,
    partitions_def=monthly_partitions,
    ins={"contacts": dg.AssetIn(partition_mapping=contacts_up_to_as_of)},
    dagster_type=TrainingSetType,
    required_resource_keys={"mlflow"},
    kinds={"pandas", "pandera"},
    check_specs=[
        dg.AssetCheckSpec(
            TRAINABLE_CHECK,
            asset="training_set",
            blocking=True,
            description="The window has rows, both labels, and both labels in each split.",
        )
    ],
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, contacts: Any
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The as-of month's window of contacts, split train/validation (stratified, seeded)."""
    as_of = pd.Timestamp(context.partition_key)
    months = window_months(as_of, config.window_months)
    window = describe(months)
    try:
        frame = assemble_window(_contacts_by_month(context, contacts), as_of, config.window_months)
        split = split_window(
            frame,
            config.validation_share,
            config.seed,
            window,
            by=config.split_by,
        )
        TrainingSet.validate(split)
    except (TrainingDataError, pa.errors.SchemaError) as error:
        yield dg.AssetCheckResult(
            check_name=TRAINABLE_CHECK, passed=False, metadata={"reason": str(error)}
        )
        raise dg.Failure(description=str(error), allow_retries=False) from error
    context.resources.mlflow.set_tags({"as_of": f"{as_of:%Y-%m}", "window": window})
    counts = split.groupby(["split", "y"]).size().unstack(fill_value=0)
    yield dg.AssetCheckResult(
        check_name=TRAINABLE_CHECK,
        passed=True,
        metadata={"rows_by_split_and_label": dg.MetadataValue.md(counts.to_markdown())},
    )
    yield dg.Output(
        split,
        metadata=rounded(
            {
                "window": window,
                "dagster/row_count": len(split),
                "train_rows": int((split["split"] == TRAIN).sum()),
                "validation_rows": int((split["split"] == VALIDATION).sum()),
                "subscription_rate": float((split["y"] == "yes").mean()),
                "digest": frame_digest(split),
            }
        ),
    )


class CandidateConfig(dg.Config, CandidateParams):
    """A family's hyperparameters as run configuration of its candidate asset."""


class LogisticRegressionConfig(CandidateConfig, LogisticRegressionParams):
    pass


class RandomForestConfig(CandidateConfig, RandomForestParams):
    pass


class XGBoostConfig(CandidateConfig, XGBoostParams):
    pass


class SVCConfig(CandidateConfig, SVCParams):
    pass


class MLPConfig(CandidateConfig, MLPParams):
    pass


CANDIDATE_CONFIGS: dict[str, type[CandidateConfig]] = {
    "logistic_regression": LogisticRegressionConfig,
    "random_forest": RandomForestConfig,
    "xgboost": XGBoostConfig,
    "svc": SVCConfig,
    "mlp": MLPConfig,
}


def _candidate_asset(family: str, config_class: type[CandidateConfig]) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{family}_candidate",
        group_name=GROUP,
        partitions_def=monthly_partitions,
        required_resource_keys={"mlflow", "model_inputs"},
        kinds={"sklearn", "mlflow"},
        description=f"A {family.replace('_', ' ')} pipeline trained on the window, logged to "
        f"MLflow as a nested run and registered as a version of bank-marketing.",
    )
    def candidate(
        context: dg.AssetExecutionContext,
        config: config_class,  # type: ignore[valid-type]
        training_set: pd.DataFrame,
    ) -> dg.Output[CandidateRecord]:
        model_inputs: ModelInputs = context.resources.model_inputs
        inputs = model_inputs.checked()
        train = training_set[training_set["split"] == TRAIN].drop(columns="split")
        validation = training_set[training_set["split"] == VALIDATION].drop(columns="split")
        fitted = config.fit(family, model_inputs, train, validation)
        params, seed, max_rows = config.fit_arguments()
        as_of = pd.Timestamp(context.partition_key)
        source = raw_source(context).get("location", "contacts")
        window = training_set["contact_month"]
        try:
            record = log_candidate(
                fitted,
                params={**params, "seed": seed, "max_train_rows": max_rows},
                inputs=inputs,
                train=train,
                validation=validation,
                tags={
                    "as_of": f"{as_of:%Y-%m}",
                    "window": f"{window.min():%Y-%m}..{window.max():%Y-%m}",
                    # Not "dagster_run_id": dagster-mlflow finds the Dagster run's own MLflow run
                    # by that tag, and a child carrying it would be taken for the parent.
                    "dagster.run_id": context.run.run_id,
                },
                data_source=source,
            )
        except MlflowException as error:
            raise dg.Failure(
                description=f"{family}_candidate {as_of:%Y-%m}: MLflow at "
                f"{redacted(MlflowClient().tracking_uri)} failed while the candidate was logged "
                f"or registered ({error.error_code}: {error.message}). This round promotes "
                f"nothing: the champion is unchanged. Run the round again once MLflow answers."
            ) from error
        context.log.info(
            "%s: validation ROC AUC %.4f, version %s",
            family,
            record.validation_metrics["roc_auc"],
            record.model_version,
        )
        run = MlflowClient().get_run(record.run_id)
        return dg.Output(
            record,
            metadata=rounded(
                {
                    **mlflow_run_links(
                        context.resources.mlflow.ui_url, run.info.experiment_id, record.run_id
                    ),
                    "model_version": record.model_version,
                    "fit_seconds": fitted.fit_seconds,
                    "train_rows": fitted.train_rows,
                    "train_rows_capped": fitted.train_rows_capped,
                    **{f"validation_{k}": v for k, v in record.validation_metrics.items()},
                }
            ),
        )

    return candidate


candidates = [_candidate_asset(family, cls) for family, cls in CANDIDATE_CONFIGS.items()]


class ChampionConfig(dg.Config, PromotionRule):
    """The promotion rule as run configuration of champion_model."""


@dataclass(frozen=True)
class ChampionRecord:
    """The champion after a round, and the decision that made or kept it."""

    version: str
    as_of: str
    validation_metrics: dict[str, float] | None
    decision: registry.Decision


@dg.asset(
    group_name=GROUP,
    partitions_def=monthly_partitions,
    ins={f"{family}_candidate": dg.AssetIn() for family in CANDIDATE_CONFIGS},
    required_resource_keys={"mlflow"},
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            CHAMPION_CHECK,
            asset="champion_model",
            blocking=True,
            description="The champion's probabilities on this round's validation data are finite "
            "and in [0, 1], and its ROC AUC is at least roc_auc_floor.",
        )
    ],
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: ChampionConfig,
    training_set: pd.DataFrame,
    **candidates_by_name: CandidateRecord,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The registry's production model (alias champion on bank-marketing) after this round."""
    client = MlflowClient()
    validation = training_set[training_set["split"] == VALIDATION].drop(columns="split")
    ranked = registry.rank(list(candidates_by_name.values()))
    registry.tag_staging(client, ranked, round_id=context.run.run_id)
    try:
        selection = registry.select(
            ranked,
            standard_errors=config.standard_errors,
            order=config.simplicity_order,
        )
    except ValueError as error:
        raise dg.Failure(
            description=f"champion_model {context.partition_key[:7]}: {error}", allow_retries=False
        ) from error
    chosen = selection.candidate
    context.log.info("Challenger: %s", selection.reason)
    current = idempotent(partial(registry.champion_version, client))
    current_tags = registry.run_tags(client, current) if current is not None else {}
    compared, compared_on = registry.comparison_rows(
        validation,
        current_tags.get("as_of"),
        current.version if current is not None else None,
    )
    challenger = registry.evaluate_version(client, chosen.model_version, validation, compared.index)
    incumbent = (
        registry.evaluate_version(client, current.version, validation, compared.index)
        if current is not None
        else None
    )
    decision = registry.decide(
        challenger_version=chosen.model_version,
        challenger_roc_auc=challenger.compared_roc_auc,
        challenger_problem=challenger.problem,
        champion_version=current.version if current is not None else None,
        champion_roc_auc=incumbent.compared_roc_auc if incumbent is not None else None,
        champion_problem=incumbent.problem if incumbent is not None else None,
        margin=config.margin,
        floor=config.roc_auc_floor,
        compared_on=compared_on,
        challenger_validation_roc_auc=challenger.roc_auc,
        selection=selection.reason,
    )
    registry.apply(client, decision)
    live = challenger if decision.promoted else incumbent
    context.log.info("Promotion: %s", decision.reason)

    live_run_id = chosen.run_id if decision.promoted else current.run_id if current else None
    problem = _unsound(live, config.roc_auc_floor)
    metadata = rounded(
        {
            "decision": decision.reason,
            "promoted": decision.promoted,
            "champion_version": live.version if live is not None else "none",
            "champion_family": _champion_family(live, decision, chosen, current_tags),
            **_champion_links(client, context.resources.mlflow.ui_url, live, live_run_id),
            "challenger_version": decision.challenger_version,
            "challenger_roc_auc": _number(decision.challenger_roc_auc),
            "previous_champion_version": decision.champion_version or "none",
            "previous_champion_roc_auc": _number(decision.champion_roc_auc),
            "compared_on": compared_on,
            "selection": selection.reason,
            "ranking": dg.MetadataValue.md(
                pd.DataFrame(
                    [
                        {
                            "family": c.family,
                            "version": c.model_version,
                            "validation_roc_auc": round(c.validation_metrics["roc_auc"], 4),
                            "stage": "staging" if place < registry.STAGING_TOP else "",
                            "challenger": "yes" if c is chosen else "",
                        }
                        for place, c in enumerate(ranked)
                    ]
                ).to_markdown(index=False)
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHAMPION_CHECK,
        passed=problem is None,
        metadata={"problem": problem or "none", **metadata},
    )
    if problem is not None or live is None:
        raise dg.Failure(
            description=f"champion_model {context.partition_key[:7]}: {problem}. "
            f"Decision: {decision.reason}",
            metadata=metadata,
            allow_retries=False,
        )
    yield dg.Output(
        ChampionRecord(
            version=live.version,
            as_of=context.partition_key[:7],
            validation_metrics=live.metrics,
            decision=decision,
        ),
        metadata=metadata,
    )


def _champion_family(
    live: registry.Evaluation | None,
    decision: registry.Decision,
    chosen: CandidateRecord,
    champion_tags: dict[str, str],
) -> str:
    """The family of the champion after the round, from the run tags of the one that stayed."""
    if live is None:
        return "none"
    if decision.promoted:
        return chosen.family
    return champion_tags.get("family", "unknown")


def _champion_links(
    client: MlflowClient, ui_url: str, live: registry.Evaluation | None, run_id: str | None
) -> dict[str, Any]:
    """The champion's page in the MLflow registry and the run that logged it, as links."""
    if live is None:
        return {}
    links: dict[str, Any] = {
        "champion_in_registry": dg.MetadataValue.url(
            mlflow_model_version_url(ui_url, MODEL_NAME, live.version)
        )
    }
    if run_id:
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except MlflowException:
            # A champion whose run is gone is judged by its check; the registry link remains.
            return links
        links.update(mlflow_run_links(ui_url, experiment_id, run_id, "champion_mlflow_run"))
    return links


def _unsound(live: registry.Evaluation | None, floor: float) -> str | None:
    if live is None:
        return "there is no champion: no candidate passed the rule"
    if live.problem is not None:
        return f"champion v{live.version}: {live.problem}"
    if live.roc_auc is not None and live.roc_auc < floor:
        return f"champion v{live.version} validation ROC AUC {live.roc_auc:.4f} < floor {floor}"
    return None


def _number(value: float | None) -> float | str:
    return "none" if value is None else value


@dg.asset(
    group_name=GROUP,
    partitions_def=monthly_partitions,
    ins={"contacts": dg.AssetIn(partition_mapping=month_after_as_of)},
    required_resource_keys={"mlflow"},
    kinds={"mlflow"},
)
def champion_evaluation(
    context: dg.AssetExecutionContext, champion_model: ChampionRecord, contacts: Any
) -> dg.Output[dict[str, Any]]:
    """The champion scored on the month after its training window: how it does on unseen data."""
    as_of = pd.Timestamp(context.partition_key)
    test_month = f"{as_of + pd.offsets.MonthBegin(1):%Y-%m}"
    frames = _contacts_by_month(context, contacts)
    month = next(iter(frames.values()), None)
    base = {"as_of": f"{as_of:%Y-%m}", "test_month": test_month, "version": champion_model.version}
    if month is None or month.empty or month["y"].nunique() < 2:
        reason = (
            f"no contacts in {test_month}"
            if month is None or month.empty
            else f"{test_month} has only one label"
        )
        context.log.warning("Test evaluation skipped: %s", reason)
        return dg.Output({**base, "skipped": reason}, metadata={**base, "skipped": reason})
    evaluation = registry.evaluate_version(MlflowClient(), champion_model.version, month)
    if evaluation.metrics is None:
        raise dg.Failure(
            description=f"champion v{champion_model.version} cannot be scored on {test_month}: "
            f"{evaluation.problem}"
        )
    mlflow = context.resources.mlflow
    with mlflow.start_run(
        run_name=f"test v{champion_model.version} on {test_month}",
        nested=True,
        tags={**base, "kind": "test_evaluation", "dagster.run_id": context.run.run_id},
    ) as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.log_param("test_rows", len(month))
    return dg.Output(
        {**base, **evaluation.metrics, "rows": len(month)},
        metadata=rounded(
            {
                **base,
                "rows": len(month),
                **{f"test_{k}": v for k, v in evaluation.metrics.items()},
                **mlflow_run_links(mlflow.ui_url, run.info.experiment_id, run.info.run_id),
            }
        ),
    )
