"""What the asset pages show: rounded numbers of unchanged types, and links into the MLflow UI."""

from __future__ import annotations

import math

import dagster as dg
import numpy as np
import pytest

from bank_marketing.orchestration.assets.metadata import (
    ROUNDING_ERROR,
    mlflow_model_version_url,
    mlflow_run_links,
    mlflow_run_url,
    rounded,
)
from bank_marketing.orchestration.sensors import RetrainPolicy, judge_drift
from bank_marketing.settings import Settings

UI = "http://127.0.0.1:5000"


def test_scores_are_rounded_to_four_decimals_and_seconds_to_two() -> None:
    shown = rounded(
        {
            "roc_auc": 0.6634523451234,
            "prediction_drift": np.float64(0.123456789),
            "subscription_rate": np.float32(0.0321987),
            "fit_seconds": 12.345678,
            "rollout_seconds": 3.1,
        }
    )
    assert shown == {
        "roc_auc": 0.6635,
        "prediction_drift": 0.1235,
        "subscription_rate": 0.0322,
        "fit_seconds": 12.35,
        "rollout_seconds": 3.1,
    }
    assert all(type(value) is float for value in shown.values())


def test_everything_but_floats_passes_unchanged() -> None:
    path = dg.MetadataValue.path("/reports/drift_2009-01.html")
    table = dg.MetadataValue.md("| a |\n|---|\n| 0.123456 |")
    metadata = {
        "rows": 1200,
        "drifted_columns": np.int64(7),
        "promoted": True,
        "prediction_drifted": np.bool_(False),
        "model_version": "12",
        "champion_version": "none",
        "report_path": path,
        "column_drift": table,
        "note": None,
    }
    shown = rounded(metadata)
    assert shown == metadata
    for key, value in metadata.items():
        assert type(shown[key]) is type(value), key


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_stay_what_they_are(value: float) -> None:
    shown = rounded({"prediction_drift": value})["prediction_drift"]
    assert type(shown) is float
    assert (math.isnan(shown) and math.isnan(value)) or shown == value


def test_the_rounding_error_is_half_a_unit_of_the_last_decimal() -> None:
    values = np.random.default_rng(0).random(1000)
    shown = [rounded({"roc_auc": v})["roc_auc"] for v in values]
    assert max(abs(s - v) for s, v in zip(shown, values, strict=True)) <= ROUNDING_ERROR


def test_dagster_stores_rounded_metadata_with_the_types_the_sensors_read() -> None:
    materialization = dg.AssetMaterialization(
        asset_key="drift_report",
        metadata=rounded(
            {
                "rows": 80,
                "drifted_share": 6 / 11,
                "prediction_drift": 0.1000499,
                "model_version": "3",
                "prediction_drifted": False,
            }
        ),
    )
    kinds = {key: type(value) for key, value in materialization.metadata.items()}
    assert kinds == {
        "rows": dg.IntMetadataValue,
        "drifted_share": dg.FloatMetadataValue,
        "prediction_drift": dg.FloatMetadataValue,
        "model_version": dg.TextMetadataValue,
        "prediction_drifted": dg.BoolMetadataValue,
    }
    values = {key: value.value for key, value in materialization.metadata.items()}
    assert values["drifted_share"] == 0.5455 and values["prediction_drift"] == 0.1
    # What a sensor compares with a threshold can keep every digit.
    exact = rounded({"prediction_drift": 0.1000499, "rmse": 0.1000499}, exact=("prediction_drift",))
    assert exact == {"prediction_drift": 0.1000499, "rmse": 0.1}


@pytest.mark.parametrize(
    ("prediction_drift", "drifted"),
    [(0.100049, True), (0.1000001, True), (0.1, False), (0.0999, False), (math.nan, False)],
)
def test_the_drift_sensor_judges_the_unrounded_numbers_drift_report_keeps(
    prediction_drift: float, drifted: bool
) -> None:
    # drift_report keeps every digit of what the sensor compares, as Grafana reads the database.
    metadata = rounded(
        {"rows": 100, "prediction_drift": prediction_drift, "drifted_share": 0.3},
        exact=("prediction_drift", "drifted_share"),
    )
    policy = RetrainPolicy(signals=["prediction_drift"])
    assert judge_drift("2009-04-01", metadata, policy).retrain is drifted


def test_a_run_page_and_its_artifact_in_the_mlflow_ui() -> None:
    assert mlflow_run_url(UI, "1", "abc123") == f"{UI}/#/experiments/1/runs/abc123"
    assert mlflow_run_url(f"{UI}/", "1", "abc123", "drift/drift_2009-01.html") == (
        f"{UI}/#/experiments/1/runs/abc123/artifacts/drift/drift_2009-01.html"
    )
    assert mlflow_run_url(UI, "1", "abc", "/reference/validation.parquet").endswith(
        "/runs/abc/artifacts/reference/validation.parquet"
    )
    assert mlflow_run_url("https://mlflow.example.com/base//", "7", "r") == (
        "https://mlflow.example.com/base/#/experiments/7/runs/r"
    )


def test_a_model_version_page_in_the_mlflow_ui() -> None:
    assert mlflow_model_version_url(f"{UI}/", "bank-marketing", "4") == (
        f"{UI}/#/models/bank-marketing/versions/4"
    )
    assert mlflow_model_version_url(UI, "a b/c", "1") == f"{UI}/#/models/a%20b%2Fc/versions/1"


def test_run_links_keep_the_plain_run_id_beside_the_link() -> None:
    links = mlflow_run_links(UI, "2", "r1", "champion_mlflow_run")
    assert links == {
        "champion_mlflow_run_id": "r1",
        "champion_mlflow_run": dg.MetadataValue.url(f"{UI}/#/experiments/2/runs/r1"),
    }
    assert set(mlflow_run_links(UI, "2", "r1")) == {"mlflow_run_id", "mlflow_run"}


@pytest.mark.parametrize(
    ("environment", "ui_url"),
    [
        ({}, UI),  # the embedded SQLite store: where `mlflow ui` serves by default
        ({"MLFLOW_TRACKING_URI": "sqlite:////data/mlflow.db"}, UI),
        ({"MLFLOW_TRACKING_URI": "postgresql://mlflow@db/mlflow"}, UI),
        ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "http://mlflow:5000"),
        (
            {"MLFLOW_TRACKING_URI": "https://ml.example.com/mlflow/"},
            "https://ml.example.com/mlflow",
        ),
        ({"BANK_MARKETING_MLFLOW_UI_URL": "http://127.0.0.1:5050/"}, "http://127.0.0.1:5050"),
        # A server the services reach by a name the browser cannot resolve: the variable wins.
        (
            {
                "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                "BANK_MARKETING_MLFLOW_UI_URL": "http://localhost:5000",
            },
            "http://localhost:5000",
        ),
        ({"BANK_MARKETING_MLFLOW_UI_URL": "  "}, UI),
    ],
)
def test_where_the_mlflow_ui_is(environment: dict[str, str], ui_url: str, tmp_path) -> None:
    settings = Settings.from_env({"BANK_MARKETING_HOME": str(tmp_path), **environment})
    assert settings.mlflow_ui_url == ui_url
