"""The training graph against MLflow on real backend stores (SQLite, and PostgreSQL via psycopg2).

One module-scoped round per backend: ingest the months, train the five (quick) candidates as of
2009-06, in parallel processes on SQLite and in this process on PostgreSQL, then read everything
back from MLflow and the registry. Tests that add rounds read only what their round added, and
run on one backend (what they check does not depend on it); the one that breaks the champion has
a home of its own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import psycopg2
import pytest
from mlflow import MlflowClient

from bank_marketing.orchestration.assets.metadata import ROUNDING_ERROR
from bank_marketing.orchestration.assets.training import CANDIDATE_CONFIGS
from bank_marketing.orchestration.definitions import build_definitions, training_defaults
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.runner import (
    backfill_contacts,
    failure_message,
    merged,
    run_evaluation,
    run_ingest,
    run_training,
)
from bank_marketing.settings import Settings
from bank_marketing.training.config import LogisticRegressionParams
from bank_marketing.training.families import SIMPLICITY_ORDER
from bank_marketing.training.features import PRE_CALL_INPUTS, labels
from bank_marketing.training.metrics import METRIC_NAMES, roc_auc_standard_error
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import EXPERIMENT_NAME, MODEL_NAME
from bank_marketing.training.windows import call_days
from bank_marketing_tests.conftest import POSTGRES, ingested_copy, make_settings

pytestmark = pytest.mark.integration

AS_OF = "2009-06-01"
MONTHS = [k for k in monthly_partitions.get_partition_keys() if k <= "2009-07-01"]
COMMON_PARAMS = {"inputs", "train_rows", "train_rows_capped", "validation_rows", "seed",
                 "max_train_rows", "day_of_year"}  # fmt: skip


@dataclass
class Round:
    settings: Settings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    result: dg.JobExecutionResult
    client: MlflowClient
    backend: str


def _postgres_database() -> str:
    try:
        admin = psycopg2.connect(connect_timeout=3, **POSTGRES)
    except psycopg2.OperationalError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL does not answer at 127.0.0.1:5432 ({error}) (CI=true)")
        pytest.skip(f"PostgreSQL does not answer at 127.0.0.1:5432 ({error})")
    admin.autocommit = True
    name = f"bank_marketing_mlflow_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def _drop(name: str) -> None:
    admin = psycopg2.connect(**POSTGRES)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def trained(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bank_full_path: Path,
    ingested_home: Path,
) -> Iterator[Round]:
    backend = request.param
    home = ingested_copy(ingested_home, tmp_path_factory.mktemp(f"training-{backend}") / "home")
    database = _postgres_database() if backend == "postgresql" else None
    tracking_uri = (
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
        if database
        else f"sqlite:///{home / 'mlflow.db'}"
    )
    env = {
        "BANK_MARKETING_HOME": str(home),
        "BANK_MARKETING_SOURCE": str(bank_full_path),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            # The candidates run in child processes that read their settings from the environment.
            for name, value in env.items():
                patch.setenv(name, value)
            for name in ("DAGSTER_HOME", "BANK_MARKETING_DB_URL"):
                patch.delenv(name, raising=False)
            settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=tracking_uri)
            defs = build_definitions(settings)
            with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
                assert all(o.success for o in backfill_contacts(defs, instance, MONTHS))
                # The SQLite round runs its candidates in parallel processes, as the daemon and
                # `bank-marketing run` do; the PostgreSQL round one after another in this process.
                result = run_training(instance, AS_OF, in_process=backend == "postgresql")
                mlflow.set_tracking_uri(tracking_uri)
                yield Round(settings, instance, defs, result, MlflowClient(tracking_uri), backend)
    finally:
        if database:
            _drop(database)


def _candidate_runs(round_: Round) -> dict[str, mlflow.entities.Run]:
    experiment = round_.client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = round_.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`dagster.run_id` = '{round_.result.run_id}'",
    )
    return {run.data.tags["family"]: run for run in runs if "family" in run.data.tags}


def _versions(round_: Round) -> list:
    """The versions this round's candidates registered (later rounds add their own)."""
    runs = {run.info.run_id for run in _candidate_runs(round_).values()}
    versions = round_.client.search_model_versions(f"name = '{MODEL_NAME}'")
    return [version for version in versions if version.run_id in runs]


def test_five_candidates_train_into_their_own_runs(trained: Round) -> None:
    assert trained.result.success, failure_message(trained.result)
    runs = _candidate_runs(trained)
    assert set(runs) == set(CANDIDATE_CONFIGS)
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs.values()}
    assert len(parents) == 1
    parent = trained.client.get_run(parents.pop())
    assert parent.data.tags["dagster_run_id"] == trained.result.run_id
    assert parent.data.tags["as_of"] == "2009-06"

    materialized = {
        event.asset_key.to_user_string().removesuffix(
            "_candidate"
        ): event.event_specific_data.materialization.metadata
        for event in trained.result.get_asset_materialization_events()
        if event.asset_key.to_user_string().endswith("_candidate")
    }
    for family, run in runs.items():
        expected = set(CANDIDATE_CONFIGS[family].model_fields) | COMMON_PARAMS
        assert set(run.data.params) == expected, family
        assert run.data.tags["as_of"] == "2009-06"
        assert run.data.tags["window"] == "2008-07..2009-06"
        assert run.data.tags["dagster.run_id"] == trained.result.run_id
        metrics = run.data.metrics
        assert {f"validation_{m}" for m in METRIC_NAMES} <= set(metrics)
        assert {f"train_{m}" for m in METRIC_NAMES} <= set(metrics)
        # Each run holds exactly the numbers its own Dagster step computed (shown to 4 decimals).
        assert metrics["validation_roc_auc"] == pytest.approx(
            materialized[family]["validation_roc_auc"].value, abs=ROUNDING_ERROR
        )
        assert materialized[family]["mlflow_run_id"].value == run.info.run_id
        assert materialized[family]["mlflow_run"].value.endswith(
            f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
        contexts = {d.tags[0].value for d in run.inputs.dataset_inputs if d.tags}
        assert contexts == {"training", "validation"}
        artifacts = {a.path for a in trained.client.list_artifacts(run.info.run_id, "reference")}
        assert artifacts == {"reference/validation.parquet"}
    assert runs["svc"].data.params["train_rows_capped"] == "True"
    assert runs["xgboost"].data.params["train_rows_capped"] == "False"


@pytest.mark.parametrize("trained", ["sqlite"], indirect=True)
def test_the_candidates_train_in_parallel_processes(trained: Round) -> None:
    """Their steps ran in processes of their own at the same time: their spans overlap."""
    spans = _step_spans(trained.instance, trained.result.run_id)
    candidates = sorted(span for step, span in spans.items() if step.endswith("_candidate"))
    assert len(candidates) == 5
    overlapping = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(candidates))
    assert overlapping, f"candidate steps never overlapped in time: {spans}"


def test_the_file_of_training_defaults_reaches_every_candidate_process(trained: Round) -> None:
    """The round starts from the session's quick file (BANK_MARKETING_TRAINING_CONFIG), read again
    in each candidate's own process (the SQLite round's); the quick candidates still learn. The
    full-size defaults' quality is test_families' check."""
    runs = _candidate_runs(trained)
    xgboost = runs["xgboost"].data.params
    assert (xgboost["n_estimators"], xgboost["learning_rate"]) == ("100", "0.1")
    assert runs["svc"].data.params["max_train_rows"] == "1500"
    assert runs["logistic_regression"].data.params["C"] == str(LogisticRegressionParams().C)
    auc = {family: run.data.metrics["validation_roc_auc"] for family, run in runs.items()}
    assert min(auc.values()) > 0.55, auc


def _step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """When each step of a run started and ended, from the run's event log."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    ends = {
        entry.step_key: entry.timestamp
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    }
    return {entry.step_key: (entry.timestamp, ends[entry.step_key]) for entry in starts}


def test_registry_holds_five_versions_three_staging_and_one_champion(trained: Round) -> None:
    versions = _versions(trained)
    runs = _candidate_runs(trained)
    assert len(versions) == 5
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs.values()}
    auc = {v.version: runs_by_id(runs)[v.run_id].data.metrics["validation_roc_auc"]
           for v in versions}  # fmt: skip
    staging = {v.version for v in versions if v.tags.get("stage") == "staging"}
    best_three = set(sorted(auc, key=lambda v: -auc[v])[:3])
    assert staging == best_three
    champion = trained.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    # The one-standard-error rule: the simplest family within one standard error of the best.
    # The standard error the best's run logged is recomputed from its model and validation data.
    best = max(auc, key=lambda v: auc[v])
    best_run = runs_by_id(runs)[next(v.run_id for v in versions if v.version == best)]
    reference = mlflow.artifacts.download_artifacts(
        run_id=best_run.info.run_id, artifact_path="reference/validation.parquet"
    )
    validation = pd.read_parquet(reference)
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{best}")
    tolerance = roc_auc_standard_error(
        labels(validation), model.predict_proba(validation)[:, 1], call_days(validation)
    )
    assert best_run.data.metrics["validation_roc_auc_standard_error"] == pytest.approx(tolerance)
    family = {v.version: runs_by_id(runs)[v.run_id].data.tags["family"] for v in versions}
    within = {family[v] for v in auc if auc[v] >= max(auc.values()) - tolerance}
    expected = next(name for name in SIMPLICITY_ORDER if name in within)
    assert family[champion.version] == expected
    assert champion.tags["promotion_selection"].startswith(f"{expected} v{champion.version} ")
    assert champion.tags["promotion_promoted"] == "True"
    assert champion.tags["promotion_reason"].startswith("no champion yet")


def runs_by_id(runs: dict[str, mlflow.entities.Run]) -> dict[str, mlflow.entities.Run]:
    return {run.info.run_id: run for run in runs.values()}


def test_champion_loads_by_alias_and_predicts_raw_records(trained: Round) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    records = pd.DataFrame(
        [
            {"age": 41, "job": "technician", "marital": "married", "education": "secondary",
             "default": "no", "balance": 1200, "housing": "yes", "loan": "no",
             "contact": "cellular", "day": 15, "month": "may", "duration": 180, "campaign": 2,
             "pdays": -1, "previous": 0, "poutcome": "unknown"},
            {"age": 67, "job": "retired", "marital": "divorced", "education": "tertiary",
             "default": "no", "balance": 15000, "housing": "no", "loan": "no",
             "contact": "telephone", "day": 3, "month": "oct", "duration": 400, "campaign": 1,
             "pdays": 92, "previous": 3, "poutcome": "success"},
        ]
    )  # fmt: skip
    probabilities = np.asarray(model.predict(records))
    assert probabilities.shape == (2, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    sklearn_model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    assert np.allclose(probabilities, sklearn_model.predict_proba(records))
    # A previous success on a cellular call in October scores higher than a cold call in May.
    assert probabilities[1, 1] > probabilities[0, 1]


def test_champion_is_scored_on_the_month_after_its_window(trained: Round) -> None:
    result = run_evaluation(trained.defs, trained.instance, AS_OF)
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("champion_evaluation")[0].metadata
    assert meta["test_month"].value == "2009-07"
    assert meta["rows"].value == 207
    assert 0.5 < meta["test_roc_auc"].value <= 1.0
    experiment = trained.client.get_experiment_by_name(EXPERIMENT_NAME)
    [run] = trained.client.search_runs(
        [experiment.experiment_id], filter_string="tags.kind = 'test_evaluation'"
    )
    assert run.data.metrics["test_roc_auc"] == pytest.approx(meta["test_roc_auc"].value, abs=1e-4)
    assert meta["mlflow_run_id"].value == run.info.run_id
    assert meta["mlflow_run"].value.endswith(f"/runs/{run.info.run_id}")


def _round_in_process(
    round_: Round, as_of: str, margin: float = 0.0, model_inputs: dict | None = None
) -> dg.ExecuteInProcessResult:
    return _train_in_process(
        round_.defs, round_.instance, round_.settings, as_of, margin, model_inputs
    )


def _train_in_process(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    settings: Settings,
    as_of: str,
    margin: float = 0.0,
    model_inputs: dict | None = None,
    window_months: int = 12,
) -> dg.ExecuteInProcessResult:
    """A training round in this process, from the home's training defaults (as a run launched
    with its own run config starts from them)."""
    run_config: dict = merged(
        training_defaults(settings),
        {
            "ops": {
                "champion_model": {"config": {"margin": margin}},
                "training_set": {"config": {"window_months": window_months}},
            }
        },
    )
    if model_inputs is not None:
        run_config["resources"] = {"model_inputs": {"config": model_inputs}}
    return defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, partition_key=as_of, run_config=run_config, raise_on_error=False
    )


@pytest.mark.parametrize("trained", ["postgresql"], indirect=True)
def test_a_challenger_that_does_not_beat_the_champion_leaves_it_in_place(trained: Round) -> None:
    before = trained.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    # This round's candidates take every input known before the call and the day of the year,
    # configured on the model_inputs resource as a user would.
    result = _round_in_process(
        trained,
        AS_OF,
        margin=1.0,
        model_inputs={"columns": list(PRE_CALL_INPUTS), "day_of_year": True},
    )
    assert result.success, failure_message(result)
    after = trained.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert after.version == before.version
    for family in CANDIDATE_CONFIGS:
        record = result.output_for_node(f"{family}_candidate")
        params = trained.client.get_run(record.run_id).data.params
        assert params["inputs"] == ",".join(PRE_CALL_INPUTS)
        assert params["day_of_year"] == "True"
    meta = result.asset_materializations_for_node("champion_model")[0].metadata
    assert meta["promoted"].value is False
    assert meta["champion_version"].value == before.version
    kept = trained.client.get_run(before.run_id)
    assert meta["champion_family"].value == kept.data.tags["family"]
    # The kept champion's run and registry page, as links to the MLflow UI.
    assert meta["champion_mlflow_run_id"].value == before.run_id
    ui = trained.settings.mlflow_ui_url
    assert meta["champion_mlflow_run"].value == (
        f"{ui}/#/experiments/{kept.info.experiment_id}/runs/{before.run_id}"
    )
    assert meta["champion_in_registry"].value == (
        f"{ui}/#/models/{MODEL_NAME}/versions/{before.version}"
    )
    challenger = trained.client.get_model_version(MODEL_NAME, meta["challenger_version"].value)
    assert challenger.tags["promotion_promoted"] == "False"
    assert "the champion stays" in challenger.tags["promotion_reason"]
    assert float(challenger.tags["promotion_champion_roc_auc"]) > 0.5
    assert float(challenger.tags["promotion_challenger_roc_auc"]) > 0.5


@pytest.mark.parametrize("trained", ["sqlite"], indirect=True)
def test_an_empty_window_trains_nothing_and_says_why(trained: Round) -> None:
    def count() -> int:
        return len(trained.client.search_model_versions(f"name = '{MODEL_NAME}'"))

    before = count()
    champion = trained.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version
    result = trained.defs.resolve_job_def("training_job").execute_in_process(
        instance=trained.instance,
        partition_key="2008-09-01",
        run_config={"ops": {"training_set": {"config": {"window_months": 1}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert (
        failure_message(result) == "training window 2008-09..2008-09 (1 month(s)) has no contacts"
    )
    assert count() == before
    assert trained.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version == champion


@pytest.fixture
def own_round(
    bank_full_path: Path, ingested_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Round]:
    """A home of its own with one quick round as of 2008-06 (two months), for a test that breaks
    its champion."""
    home = ingested_copy(ingested_home, tmp_path / "home")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    settings = make_settings(home, bank_full_path, MLFLOW_TRACKING_URI=tracking_uri)
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert all(o.success for o in backfill_contacts(defs, instance, MONTHS[:2]))
        result = _train_in_process(defs, instance, settings, MONTHS[1], window_months=2)
        assert result.success, failure_message(result)
        yield Round(settings, instance, defs, result, MlflowClient(tracking_uri), "sqlite")


def test_a_champion_whose_artifact_has_gone_stays_and_the_round_fails(own_round: Round) -> None:
    champion = own_round.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    run = own_round.client.get_run(champion.run_id)
    folder = Path(run.info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(folder.parent.parent / "models", ignore_errors=True)
    shutil.rmtree(folder)
    result = _train_in_process(
        own_round.defs, own_round.instance, own_round.settings, MONTHS[1], window_months=2
    )
    assert not result.success
    message = failure_message(result)
    assert f"current champion v{champion.version} could not be scored" in message
    after = own_round.client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert after.version == champion.version


def test_an_unreachable_tracking_server_fails_clearly(
    bank_full_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = make_settings(
        tmp_path / "home", bank_full_path, MLFLOW_TRACKING_URI="http://127.0.0.1:9"
    )
    defs = build_definitions(settings)
    with dg.instance_for_test(temp_dir=str(settings.dagster_home)) as instance:
        assert run_ingest(defs, instance).success
        assert backfill_contacts(defs, instance, ["2008-05-01"])[0].success
        result = defs.resolve_job_def("training_job").execute_in_process(
            instance=instance,
            partition_key="2008-05-01",
            run_config={"ops": {"training_set": {"config": {"window_months": 1}}}},
            raise_on_error=False,
        )
    assert not result.success
    assert "127.0.0.1:9" in failure_message(result)
    assert not result.get_asset_materialization_events()
