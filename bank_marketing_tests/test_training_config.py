"""A file of training defaults (BANK_MARKETING_TRAINING_CONFIG): checked when the definitions
load, the run configuration every training round starts from, and still overridable per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bank_marketing.orchestration.definitions import build_definitions, training_defaults
from bank_marketing.orchestration.runner import merged
from bank_marketing.settings import Settings
from bank_marketing.training.config import TrainingConfigError, read_training_config
from bank_marketing_tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "training.yaml"
    path.write_text(text)
    return path


def test_the_file_sets_parameters_by_asset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "training_set: {window_months: 6}\nxgboost_candidate: {n_estimators: 50}\n"
        "champion_model: {margin: 0.01}\n",
    )
    assert read_training_config(path) == {
        "training_set": {"window_months": 6},
        "xgboost_candidate": {"n_estimators": 50},
        "champion_model": {"margin": 0.01},
    }


def test_an_empty_file_changes_nothing(tmp_path: Path) -> None:
    assert read_training_config(write(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xgboost: {n_estimators: 50}", "'xgboost' is not a training asset; expected one of"),
        ("svc_candidate: {n_trees: 5}", "svc_candidate has no parameter n_trees"),
        ("training_set: {window_months: 40}", "training_set: window_months: Input should be"),
        ("mlp_candidate: {max_iter: many}", "mlp_candidate: max_iter: Input should be"),
        ("- a\n- b\n", "expected a mapping of training assets to parameters, got list"),
        ("training_set: [1, 2]", "training_set must map parameters"),
        ("training_set: {window_months: [", "cannot be read"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TrainingConfigError, match=r"training config .*training\.yaml") as error:
        read_training_config(path)
    assert message in str(error.value)


def test_a_missing_file_is_refused_when_the_definitions_load(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BANK_MARKETING_HOME": str(tmp_path),
            "BANK_MARKETING_TRAINING_CONFIG": str(tmp_path / "nowhere.yaml"),
        }
    )
    with pytest.raises(TrainingConfigError, match=r"nowhere\.yaml: cannot be read"):
        build_definitions(settings)


def test_training_job_starts_from_the_file_and_a_run_overrides_one_value(tmp_path: Path) -> None:
    path = write(tmp_path, "xgboost_candidate: {n_estimators: 50, learning_rate: 0.2}\n")
    settings = Settings.from_env(
        {"BANK_MARKETING_HOME": str(tmp_path), "BANK_MARKETING_TRAINING_CONFIG": str(path)}
    )
    defaults = training_defaults(settings)
    job = build_definitions(settings).resolve_job_def("training_job")
    # What a run launched without run config of its own (a sensor's, the UI's) gets.
    launched = job.partitioned_config.get_run_config_for_partition_key("2009-06-01")
    assert launched == defaults
    assert launched["ops"]["xgboost_candidate"] == {
        "config": {"n_estimators": 50, "learning_rate": 0.2}
    }
    override = {"ops": {"xgboost_candidate": {"config": {"n_estimators": 10}}}}
    assert merged(defaults, override)["ops"]["xgboost_candidate"]["config"] == {
        "n_estimators": 10,
        "learning_rate": 0.2,
    }


def test_the_tests_quick_file_is_valid() -> None:
    assert set(read_training_config(REPO / "bank_marketing_tests" / "quick_training.yaml")) == {
        "random_forest_candidate",
        "xgboost_candidate",
        "svc_candidate",
        "mlp_candidate",
    }
