"""``production_deployment``: the version the prediction service answers with, and where.

Materializing it tells the running Ray Serve application which registered version to serve
(``user_config``), waits until the service answers with it, and records that in the metadata.
It follows the champion alias unless a version is pinned (a rollback).
"""

from typing import Any

import dagster as dg
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import Field

from bank_marketing.monitoring import served, store
from bank_marketing.orchestration.assets.metadata import rounded
from bank_marketing.orchestration.assets.training import champion_model
from bank_marketing.orchestration.resources import ServingCluster
from bank_marketing.training import registry
from bank_marketing.training.tracking import MODEL_NAME


class DeploymentConfig(dg.Config):
    model_version: str | None = Field(
        default=None,
        description="Serve this registered version instead of the champion's (e.g. a rollback); "
        "the replicas keep polling the alias, so pin it with the alias too to make it last.",
    )
    shadow_version: str | None = Field(
        default=None,
        description="Score every request with this registered version too, in shadow: its "
        "scores are kept in served_predictions (role 'shadow') beside the answers, never "
        "returned. Unset: no shadow.",
    )


@dg.asset(
    group_name="serving",
    deps=[champion_model],
    kinds={"ray", "mlflow"},
    description="The registered version the prediction service answers with, and where: moved "
    "to the champion (or a pinned version) replica by replica, without failed requests.",
)
def production_deployment(
    context: dg.AssetExecutionContext, config: DeploymentConfig, serving: ServingCluster
) -> dg.MaterializeResult:
    version = config.model_version or _champion_version(serving.tracking_uri)
    _check_version_exists(serving.tracking_uri, version)
    shadow = config.shadow_version
    if shadow is not None:
        _check_version_exists(serving.tracking_uri, shadow)
    beside = f", v{shadow} in shadow" if shadow else ""
    context.log.info(f"rolling {serving.serve_url} over to {MODEL_NAME} v{version}{beside}")
    evidence = _shadow_evidence(context, serving, version)
    rollout = serving.roll_over(version, shadow_version=shadow)
    served = rollout.served
    return dg.MaterializeResult(
        metadata=rounded(
            {
                **evidence,
                "live_version": rollout.version,
                "previous_version": rollout.previous_version or "none",
                "model_uri": f"models:/{MODEL_NAME}/{rollout.version}",
                "pinned": config.model_version is not None,
                "shadow_version": shadow or "none",
                "family": served.get("family") or "unknown",
                "training_window": served.get("training_window") or "unknown",
                "serve_url": dg.MetadataValue.url(rollout.serve_url),
                "ray_dashboard": dg.MetadataValue.url(rollout.dashboard_url),
                "serve_application": rollout.app_name,
                "application_status": rollout.app_status,
                "running_replicas": rollout.replicas,
                "rollout_seconds": rollout.seconds,
            }
        )
    )


def _champion_version(tracking_uri: str) -> str:
    try:
        return registry.require_champion(MlflowClient(tracking_uri))
    except registry.NoChampion as error:
        raise dg.Failure(f"no champion to serve: {error}") from error


def _check_version_exists(tracking_uri: str, version: str) -> None:
    try:
        MlflowClient(tracking_uri).get_model_version(MODEL_NAME, version)
    except MlflowException as error:
        raise dg.Failure(
            f"{MODEL_NAME} v{version} is not in the registry at {tracking_uri}: {error.message}"
        ) from error


def _shadow_evidence(
    context: dg.AssetExecutionContext, serving: ServingCluster, version: str
) -> dict[str, Any]:
    """How ``version`` did in shadow before going live, if it ran in shadow (metadata).

    A monitoring database that cannot be read does not stop the rollout; the metadata says so.
    """
    if not serving.monitoring_db_url:
        return {}
    try:
        engine = store.connect(serving.monitoring_db_url)
        try:
            evidence = served.shadow_evidence(engine, version)
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as error:
        context.log.warning(f"cannot read v{version}'s shadow rows: {error}")
        return {"shadow_evidence": f"not read: {type(error).__name__}"}
    if evidence is None:
        return {}
    context.log.info(
        f"v{version} in shadow: {evidence.records} records, agreement {evidence.agreement:.3f}, "
        f"ROC AUC {evidence.shadow_roc_auc} against {evidence.live_roc_auc} live on "
        f"{evidence.labelled} labelled"
    )
    return {
        f"before_live_{key}": value
        for key, value in evidence.as_metadata().items()
        if value is not None
    }
