"""The bank-marketing Grafana dashboard, as code (grafana-foundation-sdk).

``uv run python grafana/dashboard.py`` rewrites ``grafana/dashboards/bank-marketing.json``, the
file Grafana's dashboard provider loads; the test suite checks that the committed file is what
this module builds. Edit this module, never the JSON.

Every panel reads one of the provisioned datasources (fixed uids, see
``provisioning/datasources/``): the monitoring tables (schema ``monitoring``), MLflow's backend
store and Dagster's run storage in PostgreSQL, and the stack's Prometheus. Months are real dates
on the time axis (the ``month`` DATE column, as midnight UTC), and the dashboard is in UTC so that
a browser west of Greenwich does not show 2009-04 as the last evening of March.

The row "Live traffic" is the service as it answers now: its Prometheus series and the records it
keeps (``served_predictions``, ``served_traffic``). Its panels follow the time picker like the
others, so they are read on a recent range (the dashboard link "Live traffic: the last 24
hours"), where the monthly panels above are empty; the data's months are 2008 to 2010.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Self

from grafana_foundation_sdk.builders import (
    barchart,
    common,
    dashboard,
    prometheus,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "bank-marketing.json"
DASHBOARD_UID = "bank-marketing"
POSTGRES_TYPE = "grafana-postgresql-datasource"
MONITORING_UID = "bank-marketing-monitoring"
MLFLOW_UID = "bank-marketing-mlflow"
DAGSTER_UID = "bank-marketing-dagster"
PROMETHEUS_TYPE = "prometheus"
PROMETHEUS_UID = "bank-marketing-prometheus"
# The data's months are 2008-05..2010-11: open on all of them, with a month of margin on each
# side so the first and last points are not drawn on the panel's edge. Later months (a live
# deployment) are one click away in the time picker.
TIME_FROM = "2008-04-01T00:00:00.000Z"
TIME_TO = "2010-12-01T00:00:00.000Z"
# The retraining settings' defaults (bank_marketing.monitoring.policy.RetrainRule; the tests check
# that these numbers are its defaults), each drawn as a dashed line on its signal's panel.
# Retrain when a month's prediction drift is above this (BANK_MARKETING_RETRAIN_PREDICTION_DRIFT,
# and the alert rule "Prediction drift" in provisioning/alerting/).
PREDICTION_DRIFT_THRESHOLD = 0.1
# Retrain when the prediction drift's p-value against its sampling noise is below this
# (BANK_MARKETING_RETRAIN_DRIFT_P_VALUE).
DRIFT_P_VALUE_THRESHOLD = 0.01
# Retrain when the realized ROC AUC is more than this many standard errors below the expected
# level (BANK_MARKETING_RETRAIN_REALIZED_Z).
REALIZED_Z_THRESHOLD = 2.0
# Retrain when CBPE's estimate is more than this below the expected ROC AUC
# (BANK_MARKETING_RETRAIN_ESTIMATED_DROP).
ESTIMATED_DROP_THRESHOLD = 0.05
# Evidently's DataDriftPreset calls a dataset drifted when this share of its inputs drifted.
DATASET_DRIFT_SHARE = 0.5
REGISTERED_MODEL = "bank-marketing"
CHAMPION_ALIAS = "champion"
# Panel ids are fixed: the alert rules link to the panels of their signals by id.
PREDICTION_DRIFT_PANEL_ID = 1
DRIFT_P_VALUE_PANEL_ID = 9
REALIZED_Z_PANEL_ID = 10
ESTIMATED_DROP_PANEL_ID = 12
# The row "Live traffic" and its panels: ids from here on, top to bottom.
LIVE_ROW_ID = 13
LIVE_ROW_Y = 59
# The service answers "subscribed" when the probability is at least this
# (bank_marketing.serving.app.THRESHOLD); shadow agreement compares both sides at it.
SUBSCRIBED_THRESHOLD = 0.5


class SignalAlert(NamedTuple):
    """An alert rule on one ``monitoring.retrain_signals`` column of the newest month, while its
    report is fresh (provisioning/alerting/rules.yaml)."""

    title: str
    column: str
    evaluator: str  # Grafana's threshold expression: "gt" fires above the threshold, "lt" below
    threshold: float
    panel_id: int  # the panel that draws the column, where Grafana marks the alert's changes

    @property
    def side(self) -> str:
        """Where the rule fires, in words: "above" or "below" the threshold."""
        return {"gt": "above", "lt": "below"}[self.evaluator]


# The second alert rule of rules.yaml (written by hand, like the first): the signal it reads and
# its threshold. To alert on another signal (estimated_drop "gt" ESTIMATED_DROP_THRESHOLD, say),
# change this and the rule together: its title, its query's column, C's evaluator, its panelId
# and its annotations. The tests fail while the two disagree.
SIGNAL_ALERT = SignalAlert(
    title="Prediction drift beyond noise",
    column="drift_p_value",
    evaluator="lt",
    threshold=DRIFT_P_VALUE_THRESHOLD,
    panel_id=DRIFT_P_VALUE_PANEL_ID,
)

# A month (DATE) as a point in time: midnight UTC, whatever the session's time zone.
MONTH_TIME = "month::timestamp AT TIME ZONE 'UTC' AS \"time\""


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL query of Grafana's PostgreSQL datasource (the SDK has no type for it)."""

    def __init__(self, ref_id: str, raw_sql: str, query_format: str, datasource_uid: str) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.query_format = query_format
        self.datasource_uid = datasource_uid

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": POSTGRES_TYPE, "uid": self.datasource_uid},
            "editorMode": "code",
            "format": self.query_format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["refId"], data["rawSql"], data["format"], data["datasource"]["uid"])


class Sql(cogbuilder.Builder[SqlQuery]):
    """Builds a :class:`SqlQuery`; ``time_series`` needs a ``time`` column, sorted."""

    def __init__(
        self,
        datasource_uid: str,
        raw_sql: str,
        query_format: str = "time_series",
        ref_id: str = "A",
    ):
        sql = textwrap.dedent(raw_sql).strip()
        self._internal = SqlQuery(ref_id, sql, query_format, datasource_uid)

    def build(self) -> SqlQuery:
        return self._internal


class BuiltInAnnotations:
    """Grafana's own "Annotations & Alerts": alert state changes drawn on the linked panel.

    The SDK's annotation type has no ``builtIn`` flag; without it Grafana adds a second copy.
    """

    def to_json(self) -> dict[str, object]:
        return {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }


class BuiltIn(cogbuilder.Builder[BuiltInAnnotations]):
    def build(self) -> BuiltInAnnotations:
        return BuiltInAnnotations()


def datasource(uid: str, kind: str = POSTGRES_TYPE) -> dashboard_models.DataSourceRef:
    return dashboard_models.DataSourceRef(type_val=kind, uid=uid)


def position(x: int, y: int, w: int, h: int) -> dashboard_models.GridPos:
    return dashboard_models.GridPos(x=x, y=y, w=w, h=h)


def legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
    )


def dashed(dash: list[float] | None = None) -> dashboard_models.DynamicConfigValue:
    """A field override that draws the series as a dashed line: a threshold, not data."""
    return dashboard_models.DynamicConfigValue(
        id_val="custom.lineStyle", value={"fill": "dash", "dash": dash or [10, 10]}
    )


def fixed_color(color: str) -> dashboard_models.DynamicConfigValue:
    return dashboard_models.DynamicConfigValue(
        id_val="color", value={"mode": "fixed", "fixedColor": color}
    )


def threshold_line() -> list[dashboard_models.DynamicConfigValue]:
    """Field overrides for a threshold drawn as a series (a constant column of the query): red,
    dashed, no points. Its name in the legend says which side retrains."""
    return [
        dashed(),
        fixed_color("red"),
        dashboard_models.DynamicConfigValue(id_val="custom.showPoints", value="never"),
    ]


def monthly(
    panel_id: int, title: str, description: str, uid: str, sql: str, grid: dashboard_models.GridPos
) -> timeseries.Panel:
    """A time series of one point per month: lines through visible points, no smoothing."""
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(datasource(uid))
        .with_target(Sql(uid, sql))
        .grid_pos(grid)
        .line_width(2)
        .show_points(common_models.VisibilityMode.ALWAYS)
        .point_size(6)
        .span_nulls(False)
        .legend(legend())
        .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
    )


def prediction_drift_panel() -> timeseries.Panel:
    return (
        monthly(
            PREDICTION_DRIFT_PANEL_ID,
            "Prediction drift per month",
            "Normalized Wasserstein distance between the month's predicted probabilities and "
            "those of the champion's reference data. Above the dashed line "
            f"({PREDICTION_DRIFT_THRESHOLD}) a retrain is requested (retrain_on_drift, and the "
            "Grafana alert on the latest month).",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   prediction_drift AS "prediction drift"
            FROM monitoring.drift_reports
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(0, 0, 12, 8),
        )
        .min(0)
        .decimals(3)
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    dashboard_models.Threshold(value=None, color="green"),
                    dashboard_models.Threshold(value=PREDICTION_DRIFT_THRESHOLD, color="red"),
                ]
            )
        )
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(common_models.GraphTresholdsStyleMode.DASHED)
        )
        .color_scheme(
            dashboard.FieldColor().mode(dashboard_models.FieldColorModeId.FIXED).fixed_color("blue")
        )
    )


def alert_list_panel() -> dashboard.Panel:
    return (
        dashboard.Panel()
        .type("alertlist")
        .id(2)
        .title("Alerts")
        .description(
            "Grafana-managed alert rules and their state. 'Prediction drift' fires for the "
            "latest month when its report is fresh and its prediction drift above "
            f"{PREDICTION_DRIFT_THRESHOLD:g}; '{SIGNAL_ALERT.title}' when its "
            f"{SIGNAL_ALERT.column} is {SIGNAL_ALERT.side} "
            f"{SIGNAL_ALERT.threshold:g}. Notifications go to the retraining webhook; "
            "BANK_MARKETING_RETRAIN_ALERT_NAMES says which rules retrain."
        )
        .grid_pos(position(12, 0, 12, 8))
        .options(
            {
                "viewMode": "list",
                "groupMode": "default",
                "groupBy": [],
                "maxItems": 20,
                "sortOrder": 3,  # importance: firing first
                "dashboardAlerts": False,
                "alertName": "",
                "alertInstanceLabelFilter": "",
                "showInstances": True,
                "stateFilter": {
                    "firing": True,
                    "pending": True,
                    "recovering": True,
                    "noData": True,
                    "normal": True,
                    "error": True,
                },
            }
        )
    )


def drifted_columns_panel() -> timeseries.Panel:
    threshold = f"threshold ({DATASET_DRIFT_SHARE:g} of the inputs)"
    return (
        monthly(
            3,
            "Drifted input columns per month",
            "Input columns whose distribution drifted from the champion's reference data "
            "(Evidently, per-column tests). Dashed: the dataset-drift threshold, "
            f"{DATASET_DRIFT_SHARE:g} of the inputs checked.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   drifted_columns AS "drifted columns",
                   input_columns * {DATASET_DRIFT_SHARE} AS "{threshold}"
            FROM monitoring.drift_reports
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(0, 8, 12, 8),
        )
        .min(0)
        .decimals(0)
        .override_by_name(threshold, [dashed(), fixed_color("red")])
        .override_by_name("drifted columns", [fixed_color("orange")])
    )


def missing_values_panel() -> timeseries.Panel:
    return (
        monthly(
            4,
            "Share of missing values per month",
            "Missing cells over all input cells of the month's contacts.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   missing_share AS "missing values"
            FROM monitoring.drift_reports
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(12, 8, 12, 8),
        )
        .unit("percentunit")
        .min(0)
        .color_scheme(
            dashboard.FieldColor()
            .mode(dashboard_models.FieldColorModeId.FIXED)
            .fixed_color("purple")
        )
    )


# The retraining signals (monitoring.retrain_signals, one row per month written with its drift
# report): what the retraining policy compares with its thresholds.


def drift_p_value_panel() -> timeseries.Panel:
    threshold = f"retrain below {DRIFT_P_VALUE_THRESHOLD:g}"
    return (
        monthly(
            DRIFT_P_VALUE_PANEL_ID,
            "Prediction drift against its noise",
            "The month's prediction drift judged against its sampling noise: the share of months "
            "of the same size, drawn from the scoring model's reference data, whose predictions "
            "drift as much (a p-value; log scale). Small is real drift whatever the month's "
            "size, where the raw distance of a small month is large from noise alone; the "
            "smallest possible value is one over the number of draws plus one. Dashed: "
            f"{DRIFT_P_VALUE_THRESHOLD:g}, the default of BANK_MARKETING_RETRAIN_DRIFT_P_VALUE; "
            "below it the retraining signal 'drift_p_value' fires, and so does the alert "
            f"'{SIGNAL_ALERT.title}' for the latest month.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   drift_p_value AS "drift p-value",
                   {DRIFT_P_VALUE_THRESHOLD} AS "{threshold}"
            FROM monitoring.retrain_signals
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(0, 16, 12, 8),
        )
        .scale_distribution(
            common.ScaleDistributionConfig().type(common_models.ScaleDistribution.LOG).log(10)
        )
        .max(1)
        .decimals(3)
        .override_by_name("drift p-value", [fixed_color("blue")])
        .override_by_name(threshold, threshold_line())
    )


def realized_z_panel() -> timeseries.Panel:
    threshold = f"retrain below {-REALIZED_Z_THRESHOLD:g}"
    return (
        monthly(
            REALIZED_Z_PANEL_ID,
            "Realized ROC AUC against expected",
            "The month's realized ROC AUC minus the scoring model's expected ROC AUC (its "
            "validation ROC AUC), in standard errors of the two combined (each bootstrapped over "
            "call days): below zero the model did worse than expected. Empty until the month's "
            f"labels are in. Dashed: {-REALIZED_Z_THRESHOLD:g}, the default of "
            "BANK_MARKETING_RETRAIN_REALIZED_Z (in standard errors below the expected level); "
            "below it the retraining signal 'realized_performance' fires.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   realized_z AS "realized z",
                   {-REALIZED_Z_THRESHOLD} AS "{threshold}"
            FROM monitoring.retrain_signals
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(12, 16, 12, 8),
        )
        .decimals(2)
        .override_by_name("realized z", [fixed_color("green")])
        .override_by_name(threshold, threshold_line())
    )


def estimated_roc_auc_panel() -> timeseries.Panel:
    return (
        monthly(
            11,
            "Estimated ROC AUC (CBPE, before labels)",
            "CBPE's label-free estimate of the month's ROC AUC (confidence-based performance "
            "estimation: the model's scores, calibrated on its reference data, stand in for the "
            "outcomes), the realized ROC AUC once the labels are in, and the expected level "
            "(the model's validation ROC AUC, dashed). Where the estimate follows the realized "
            "value, it can be trusted for the months whose labels have not arrived. It sees a "
            "shift of the contacts, not a change in who subscribes at a given score. Its stated "
            "error is estimated_roc_auc_error in monitoring.retrain_signals.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   estimated_roc_auc AS "estimated ROC AUC (CBPE)",
                   realized_roc_auc AS "realized ROC AUC",
                   expected_roc_auc AS "expected ROC AUC"
            FROM monitoring.retrain_signals
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(0, 24, 12, 8),
        )
        .decimals(3)
        .override_by_name("estimated ROC AUC (CBPE)", [fixed_color("orange")])
        .override_by_name("realized ROC AUC", [fixed_color("green")])
        .override_by_name("expected ROC AUC", [dashed([4, 4]), fixed_color("text")])
    )


def estimated_drop_panel() -> timeseries.Panel:
    threshold = f"retrain above {ESTIMATED_DROP_THRESHOLD:g}"
    return (
        monthly(
            ESTIMATED_DROP_PANEL_ID,
            "Estimated ROC AUC drop (CBPE)",
            "The expected ROC AUC (the scoring model's validation ROC AUC) minus CBPE's "
            "label-free estimate of the month's: how far the month is expected to fall below "
            "the model's level, before its labels arrive. Dashed: "
            f"{ESTIMATED_DROP_THRESHOLD:g}, the default of "
            "BANK_MARKETING_RETRAIN_ESTIMATED_DROP; above it the retraining signal "
            "'estimated_performance' fires.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   estimated_drop AS "estimated drop",
                   {ESTIMATED_DROP_THRESHOLD} AS "{threshold}"
            FROM monitoring.retrain_signals
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(12, 24, 12, 8),
        )
        .decimals(3)
        .override_by_name("estimated drop", [fixed_color("orange")])
        .override_by_name(threshold, threshold_line())
    )


def realized_roc_auc_panel() -> timeseries.Panel:
    return (
        monthly(
            5,
            "Realized ROC AUC per month",
            "ROC AUC of the month's predictions against the outcomes, scored by the champion "
            "that was live when the month arrived. Empty where a month has a single label.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   roc_auc AS "ROC AUC"
            FROM monitoring.monthly_quality
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(0, 32, 12, 8),
        )
        .decimals(3)
        .color_scheme(
            dashboard.FieldColor()
            .mode(dashboard_models.FieldColorModeId.FIXED)
            .fixed_color("green")
        )
    )


def subscription_panel() -> timeseries.Panel:
    return (
        monthly(
            6,
            "Subscription rate against mean predicted probability",
            "The share of the month's contacts who subscribed, and the mean probability the "
            "model gave them: apart, the model's calibration no longer fits the month.",
            MONITORING_UID,
            f"""
            SELECT {MONTH_TIME},
                   subscription_rate AS "subscription rate",
                   mean_probability AS "mean predicted probability"
            FROM monitoring.monthly_quality
            WHERE $__timeFilter(month)
            ORDER BY 1
            """,
            position(12, 32, 12, 8),
        )
        .unit("percentunit")
        .min(0)
        .override_by_name("subscription rate", [fixed_color("green")])
        .override_by_name("mean predicted probability", [fixed_color("blue")])
    )


def model_performance_panel() -> barchart.Panel:
    return (
        barchart.Panel()
        .id(7)
        .title("Model performance per registered version")
        .description(
            f"Train and validation ROC AUC of every version of the registered model "
            f"'{REGISTERED_MODEL}' trained as of a month in the time range (MLflow). A wide gap "
            f"is overfitting; '(champion)' marks the version the alias '{CHAMPION_ALIAS}' "
            "points at."
        )
        .datasource(datasource(MLFLOW_UID))
        .with_target(
            Sql(
                MLFLOW_UID,
                f"""
                SELECT 'v' || mv.version || ' ' || coalesce(family.value, '?')
                         || ' as of ' || as_of.value
                         || CASE WHEN champion.alias IS NULL THEN '' ELSE ' (champion)' END
                         AS "version",
                       train.value AS "train ROC AUC",
                       validation.value AS "validation ROC AUC"
                FROM model_versions AS mv
                JOIN tags AS as_of ON as_of.run_uuid = mv.run_id AND as_of.key = 'as_of'
                LEFT JOIN tags AS family ON family.run_uuid = mv.run_id AND family.key = 'family'
                LEFT JOIN latest_metrics AS train
                       ON train.run_uuid = mv.run_id AND train.key = 'train_roc_auc'
                LEFT JOIN latest_metrics AS validation
                       ON validation.run_uuid = mv.run_id AND validation.key = 'validation_roc_auc'
                LEFT JOIN registered_model_aliases AS champion
                       ON champion.name = mv.name AND champion.version = mv.version
                      AND champion.alias = '{CHAMPION_ALIAS}'
                WHERE mv.name = '{REGISTERED_MODEL}'
                  AND to_date(as_of.value, 'YYYY-MM') BETWEEN $__timeFrom() AND $__timeTo()
                ORDER BY mv.version
                """,
                query_format="table",
            )
        )
        .grid_pos(position(0, 40, 24, 9))
        .x_field("version")
        .orientation(common_models.VizOrientation.VERTICAL)
        .x_tick_label_rotation(-45)
        .x_tick_label_max_length(40)
        .show_value(common_models.VisibilityMode.NEVER)
        .axis_soft_min(0.5)
        .max(1)
        .decimals(3)
        .legend(legend())
        .override_by_name("train ROC AUC", [fixed_color("light-blue")])
        .override_by_name("validation ROC AUC", [fixed_color("dark-blue")])
    )


RUN_STATUS_COLORS = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "STARTED": "blue",
    "STARTING": "blue",
    "QUEUED": "text",
    "NOT_STARTED": "text",
    "CANCELING": "orange",
    "CANCELED": "orange",
}


def pipeline_runs_panel() -> table.Panel:
    status_mapping = dashboard_models.ValueMap(
        options={
            status: dashboard_models.ValueMappingResult(color=color, index=index)
            for index, (status, color) in enumerate(RUN_STATUS_COLORS.items())
        }
    )
    return (
        table.Panel()
        .id(8)
        .title("Pipeline runs")
        .description(
            "Dagster runs, newest first (run storage): runs for a month in the time range, and "
            "runs of no month (ingestion, deployments). 'trigger' names the sensor that asked."
        )
        .datasource(datasource(DAGSTER_UID))
        .with_target(
            Sql(
                DAGSTER_UID,
                r"""
                SELECT r.pipeline_name AS "job",
                       p.value AS "partition",
                       r.status AS "status",
                       t.value AS "trigger",
                       to_timestamp(r.start_time) AS "start",
                       r.end_time - r.start_time AS "duration"
                FROM runs AS r
                LEFT JOIN run_tags AS p ON p.run_id = r.run_id AND p.key = 'dagster/partition'
                LEFT JOIN run_tags AS t ON t.run_id = r.run_id AND t.key = 'bank_marketing/trigger'
                WHERE p.value IS NULL
                   OR CASE WHEN p.value ~ '^\d{4}-\d{2}-\d{2}$' THEN p.value::date END
                      BETWEEN $__timeFrom() AND $__timeTo()
                ORDER BY r.create_timestamp DESC
                LIMIT 500
                """,
                query_format="table",
            )
        )
        .grid_pos(position(0, 49, 24, 10))
        .show_header(True)
        .override_by_name(
            "status",
            [
                dashboard_models.DynamicConfigValue(id_val="mappings", value=[status_mapping]),
                dashboard_models.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-text"}
                ),
            ],
        )
        .override_by_name(
            "duration", [dashboard_models.DynamicConfigValue(id_val="unit", value="s")]
        )
    )


# The row "Live traffic": the service as it answers now. Its Prometheus series are Ray's export of
# bank_marketing/serving/metrics.py (Ray prefixes them with ray_); its PostgreSQL tables are what
# the replicas keep (served_predictions) and the daily served_traffic asset computes. Every
# version-labelled series is named "version N", in both sources, so a rollover reads as one name
# ending and the next one starting.

# Grafana's rate window: at least four scrapes (the datasource's timeInterval is the 10 s scrape).
RATE = "$__rate_interval"
PREDICT = 'route="/predict"'


def rate(series: str, matchers: str = "") -> str:
    selector = f"{series}{{{matchers}}}" if matchers else series
    return f"rate({selector}[{RATE}])"


class Rollovers:
    """A dashboard annotation on Prometheus: a mark where a model version starts answering (its
    requests series exists now and did not a minute earlier), on the live row's panels.

    Grafana draws annotations over the dashboard's time range, so the marks show when the picker
    is on a recent range, as the live panels are read. The SDK's annotation type has no field for
    Prometheus's step and title."""

    def __init__(self, panel_ids: list[int]) -> None:
        self.panel_ids = panel_ids

    def to_json(self) -> dict[str, object]:
        requests = 'ray_bank_marketing_requests_total{model_version!="none"}'
        return {
            "datasource": {"type": PROMETHEUS_TYPE, "uid": PROMETHEUS_UID},
            "enable": True,
            "hide": False,
            "iconColor": "purple",
            "name": "Model rollovers",
            "expr": f"count by (model_version) ({requests}) "
            f"unless count by (model_version) ({requests} offset 1m)",
            "step": "1m",
            "titleFormat": "version {{model_version}} starts answering",
            "textFormat": "",
            "tagKeys": "model_version",
            "useValueForTime": False,
            "filter": {"exclude": False, "ids": self.panel_ids},
        }


class RolloverAnnotations(cogbuilder.Builder[Rollovers]):
    def __init__(self, panel_ids: list[int]) -> None:
        self._internal = Rollovers(panel_ids)

    def build(self) -> Rollovers:
        return self._internal


def promql(ref_id: str, expr: str, legend_format: str) -> prometheus.Dataquery:
    """A range query of the stack's Prometheus, as typed in the code editor."""
    return (
        prometheus.Dataquery()
        .ref_id(ref_id)
        .expr(expr)
        .legend_format(legend_format)
        .range()
        .editor_mode(prometheus_models.QueryEditorMode.CODE)
        .datasource(datasource(PROMETHEUS_UID, PROMETHEUS_TYPE))
    )


def live(
    panel_id: int, title: str, description: str, uid: str, kind: str, grid: dashboard_models.GridPos
) -> timeseries.Panel:
    """A time series of the live row: no points, and no line across a gap, where a version
    stopped answering or the service answered nothing."""
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(datasource(uid, kind))
        .grid_pos(grid)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(legend())
        .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
    )


def live_position(index: int, w: int = 12) -> dashboard_models.GridPos:
    """The ``index``-th panel of the live row, two a line, 8 high."""
    return position(12 * (index % 2), LIVE_ROW_Y + 1 + 8 * (index // 2), w, 8)


def live_row() -> dashboard.Row:
    return dashboard.Row("Live traffic").id(LIVE_ROW_ID).grid_pos(position(0, LIVE_ROW_Y, 24, 1))


def requests_panel() -> timeseries.Panel:
    return (
        live(
            LIVE_ROW_ID + 1,
            "Predictions per second by model version",
            "POST /predict requests answered per second, whatever their status, by the model "
            "version that answered ('version none': no model loaded, answered 503). A rollover "
            "is one version's line ending and the next one's starting; a purple mark (the "
            "annotation 'Model rollovers') where a version starts answering.",
            PROMETHEUS_UID,
            PROMETHEUS_TYPE,
            live_position(0),
        )
        .with_target(
            promql(
                "A",
                "sum by (model_version) "
                f"({rate('ray_bank_marketing_requests_total', PREDICT)}) > 0",
                "version {{model_version}}",
            )
        )
        .unit("reqps")
        .min(0)
    )


def latency_panel() -> timeseries.Panel:
    buckets = rate("ray_bank_marketing_request_latency_ms_bucket", PREDICT)
    return (
        live(
            LIVE_ROW_ID + 2,
            "Prediction latency p50 and p99 by model version",
            "Time in the service from a POST /predict request's arrival to its answer (batching "
            "and scoring included, Serve's proxy not): the median and the 99th percentile over "
            "Grafana's rate window, by model version, interpolated within the histogram's "
            "buckets (bank_marketing/serving/metrics.py).",
            PROMETHEUS_UID,
            PROMETHEUS_TYPE,
            live_position(1),
        )
        .with_target(
            promql(
                "A",
                f"histogram_quantile(0.5, sum by (le, model_version) ({buckets}))",
                "p50 version {{model_version}}",
            )
        )
        .with_target(
            promql(
                "B",
                f"histogram_quantile(0.99, sum by (le, model_version) ({buckets}))",
                "p99 version {{model_version}}",
            )
        )
        .unit("ms")
        .min(0)
        .override_by_query("B", [dashed([4, 4])])
    )


def errors_panel() -> timeseries.Panel:
    requests = "ray_bank_marketing_requests_total"
    client, server = 'status=~"4.."', 'status=~"5.."'
    proxy = rate("ray_serve_num_http_requests_total", 'status_code=~"5.."')
    return (
        live(
            LIVE_ROW_ID + 3,
            "Client and server errors per second",
            "Answers per second with a 4xx status (refused input on /predict, a missing token "
            "or an unknown request on /feedback) and with a 5xx status, by route, as the service "
            "counts them; and the 5xx that Ray Serve's HTTP proxy answered, which also counts "
            "requests that never reached a replica (none running, or one that crashed).",
            PROMETHEUS_UID,
            PROMETHEUS_TYPE,
            live_position(2),
        )
        .with_target(
            promql(
                "A",
                f"sum by (route) ({rate(requests, client)})",
                "4xx {{route}}",
            )
        )
        .with_target(
            promql(
                "B",
                f"sum by (route) ({rate(requests, server)})",
                "5xx {{route}}",
            )
        )
        .with_target(
            promql(
                "C",
                f"sum by (route) ({proxy})",
                "5xx at Serve's proxy {{route}}",
            )
        )
        .unit("reqps")
        .min(0)
        .override_by_query("A", [fixed_color("orange")])
        .override_by_query("B", [fixed_color("red")])
        .override_by_query("C", [fixed_color("dark-red"), dashed([4, 4])])
    )


def mean_probability_panel() -> timeseries.Panel:
    by = "sum by (model_version, role)"
    return (
        live(
            LIVE_ROW_ID + 4,
            "Mean predicted probability by model version and role",
            "The mean probability of subscribing the service predicted, over Grafana's rate "
            "window: 'live' is what it answered, 'shadow' (dashed) what the challenger running "
            "in shadow gave the same records. A step at a rollover is the new version's "
            "calibration; the monthly panels compare it with the subscription rate.",
            PROMETHEUS_UID,
            PROMETHEUS_TYPE,
            live_position(3),
        )
        .with_target(
            promql(
                "A",
                f"{by} ({rate('ray_bank_marketing_probability_sum')}) "
                f"/ {by} ({rate('ray_bank_marketing_probability_count')})",
                "version {{model_version}} {{role}}",
            )
        )
        .unit("percentunit")
        .min(0)
        .override_by_regexp(".* shadow$", [dashed([4, 4])])
    )


def served_records_panel() -> timeseries.Panel:
    queue = "waiting to be written"
    return (
        live(
            LIVE_ROW_ID + 5,
            "Answered records kept and dropped",
            "Answered records per second written to served_predictions ('kept'), lost because "
            "the monitoring database was unreachable for longer than the write queue holds "
            "('dropped'), or refused because a client reused a request id ('duplicate'); and "
            "the records waiting in the replicas' write queues (right axis).",
            PROMETHEUS_UID,
            PROMETHEUS_TYPE,
            live_position(4),
        )
        .with_target(
            promql(
                "A",
                f"sum by (outcome) ({rate('ray_bank_marketing_served_records_total')})",
                "{{outcome}}",
            )
        )
        .with_target(promql("B", "sum(ray_bank_marketing_served_queue)", queue))
        .unit("rps")
        .min(0)
        .override_by_name("kept", [fixed_color("green")])
        .override_by_name("dropped", [fixed_color("red")])
        .override_by_name("duplicate", [fixed_color("orange")])
        .override_by_name(
            queue,
            [
                fixed_color("blue"),
                dashboard_models.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                dashboard_models.DynamicConfigValue(id_val="unit", value="short"),
            ],
        )
    )


# The live row's PostgreSQL queries return (time, metric, one value): Grafana names each series
# after its metric text (its PostgreSQL backend's convention for three columns), "version N" as
# the Prometheus legends do.
LIVE_HOUR = "date_trunc('hour', received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS \"time\""
LIVE_DAY = "date_trunc('day', live.received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS \"time\""
TRAFFIC_DAY = "day::timestamp AT TIME ZONE 'UTC' AS \"time\""
TRAFFIC_METRIC = "'version ' || model_version || ' ' || role"


def answered_records_panel() -> timeseries.Panel:
    return (
        live(
            LIVE_ROW_ID + 6,
            "Answered records per hour by model version",
            "Records the service answered and kept in served_predictions (role 'live'), by UTC "
            "hour and the version that answered; an hour with a rollover has a bar of each "
            "version. Records dropped while the database was down are not here (see 'Answered "
            "records kept and dropped').",
            MONITORING_UID,
            POSTGRES_TYPE,
            live_position(5),
        )
        .with_target(
            Sql(
                MONITORING_UID,
                f"""
                SELECT {LIVE_HOUR},
                       'version ' || model_version AS metric,
                       count(*) AS "records"
                FROM monitoring.served_predictions
                WHERE role = 'live' AND $__timeFilter(received_at)
                GROUP BY 1, 2
                ORDER BY 1, 2
                """,
            )
        )
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
        .min(0)
        .decimals(0)
    )


def shadow_sql(metric: str, value: str, column: str) -> str:
    """Live and shadow answers of the same records, by UTC day and the pair of versions."""
    return f"""
        SELECT {LIVE_DAY},
               '{metric}, challenger version ' || shadow.model_version
                 || ' against version ' || live.model_version AS metric,
               {value} AS "{column}"
        FROM monitoring.served_predictions AS live
        JOIN monitoring.served_predictions AS shadow
          ON shadow.request_id = live.request_id AND shadow.record = live.record
         AND shadow.role = 'shadow'
        WHERE live.role = 'live' AND $__timeFilter(live.received_at)
        GROUP BY 1, 2
        ORDER BY 1, 2
        """


def shadow_agreement_panel() -> timeseries.Panel:
    threshold = SUBSCRIBED_THRESHOLD
    agree = (
        f"avg(CASE WHEN (live.probability >= {threshold}) = (shadow.probability >= {threshold}) "
        "THEN 1.0 ELSE 0.0 END)"
    )
    return (
        live(
            LIVE_ROW_ID + 7,
            "Shadow agreement by day",
            "While a challenger runs in shadow, the share of the day's records on which it "
            f"agrees with the live answer (both subscribed, or both not, at {threshold:g}), and "
            "the mean absolute difference of the two probabilities (right axis, dashed), by "
            "the challenger's version and the live one. Low agreement is a changed decision "
            "for that share of clients, before any outcome says which side was right.",
            MONITORING_UID,
            POSTGRES_TYPE,
            live_position(6),
        )
        .with_target(Sql(MONITORING_UID, shadow_sql("agreement", agree, "agreement")))
        .with_target(
            Sql(
                MONITORING_UID,
                shadow_sql(
                    "mean absolute difference",
                    "avg(abs(live.probability - shadow.probability))",
                    "mean absolute difference",
                ),
                ref_id="B",
            )
        )
        .show_points(common_models.VisibilityMode.ALWAYS)
        .point_size(6)
        .unit("percentunit")
        .min(0)
        .override_by_query(
            "B",
            [
                dashed([4, 4]),
                dashboard_models.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                dashboard_models.DynamicConfigValue(id_val="unit", value="none"),
                dashboard_models.DynamicConfigValue(id_val="decimals", value=3),
            ],
        )
    )


def realized_live_roc_auc_panel() -> timeseries.Panel:
    return (
        live(
            LIVE_ROW_ID + 8,
            "Realized ROC AUC of served traffic by day",
            "ROC AUC of each day's answered records against the outcomes clients reported "
            "(POST /feedback), by the version that scored them and its role (served_traffic): "
            "the champion's realized quality, and the challenger's on the same records while "
            "it runs in shadow. Empty until a day has outcomes of both kinds.",
            MONITORING_UID,
            POSTGRES_TYPE,
            live_position(7),
        )
        .with_target(
            Sql(
                MONITORING_UID,
                f"""
                SELECT {TRAFFIC_DAY},
                       {TRAFFIC_METRIC} AS metric,
                       roc_auc AS "ROC AUC"
                FROM monitoring.served_traffic
                WHERE $__timeFilter(day) AND roc_auc IS NOT NULL
                ORDER BY 1, 2
                """,
            )
        )
        .show_points(common_models.VisibilityMode.ALWAYS)
        .point_size(6)
        .decimals(3)
        .override_by_regexp(".* shadow$", [dashed([4, 4])])
    )


def served_drift_panel() -> timeseries.Panel:
    def sql(column: str, name: str) -> str:
        return f"""
            SELECT {TRAFFIC_DAY},
                   '{name}, ' || {TRAFFIC_METRIC} AS metric,
                   {column} AS "{name}"
            FROM monitoring.served_traffic
            WHERE $__timeFilter(day) AND {column} IS NOT NULL
            ORDER BY 1, 2
            """

    return (
        live(
            LIVE_ROW_ID + 9,
            "Drift of served traffic by day",
            "Each day's answered records against the reference data of the version that scored "
            "them (Evidently, as for the monthly drift report; served_traffic): the prediction "
            "drift of the probabilities, and the share of input columns that drifted (dashed), "
            "by version and role.",
            MONITORING_UID,
            POSTGRES_TYPE,
            live_position(8, w=24),
        )
        .with_target(Sql(MONITORING_UID, sql("prediction_drift", "prediction drift")))
        .with_target(Sql(MONITORING_UID, sql("drifted_share", "drifted input share"), ref_id="B"))
        .show_points(common_models.VisibilityMode.ALWAYS)
        .point_size(6)
        .min(0)
        .decimals(3)
        .override_by_query("B", [dashed([4, 4])])
    )


def live_panels() -> list[timeseries.Panel]:
    return [
        requests_panel(),
        latency_panel(),
        errors_panel(),
        mean_probability_panel(),
        served_records_panel(),
        answered_records_panel(),
        shadow_agreement_panel(),
        realized_live_roc_auc_panel(),
        served_drift_panel(),
    ]


def epoch_ms(moment: str) -> int:
    return round(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1000)


def link(title: str, tooltip: str, query: str) -> dashboard.DashboardLink:
    """A link to this dashboard on another time range (Grafana prefixes its sub-path, if any)."""
    return (
        dashboard.DashboardLink(title)
        .type(dashboard_models.DashboardLinkType.LINK)
        .url(f"/d/{DASHBOARD_UID}?{query}")
        .tooltip(tooltip)
        .icon("dashboard")
        .keep_time(False)
        .include_vars(False)
        .target_blank(False)
        .as_dropdown(False)
    )


def build() -> dashboard_models.Dashboard:
    """The dashboard model: panels top to bottom as an operator reads them."""
    live_row_panels = live_panels()
    builder = (
        dashboard.Dashboard("Bank marketing: drift, quality and the retraining loop")
        .uid(DASHBOARD_UID)
        .description(
            "Monthly monitoring of the bank-marketing model: drift, the retraining signals "
            "against their thresholds, realized quality, the registered versions and the "
            "pipeline runs that retrain and deploy them; and the service's live traffic "
            "(requests, latency, errors, probabilities, shadow agreement, daily drift and "
            "realized quality of what it answered)."
        )
        .tags(["bank-marketing", "mlops", "generated"])
        .timezone("utc")
        .time(TIME_FROM, TIME_TO)
        .refresh("5m")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .annotation(BuiltIn())
        .annotation(RolloverAnnotations([panel.build().id_val for panel in live_row_panels]))
        .links(
            [
                link(
                    "Live traffic: the last 24 hours",
                    "The row 'Live traffic' on the service's last day (the monthly panels are "
                    "empty there: the data's months are 2008 to 2010).",
                    "from=now-24h&to=now",
                ),
                link(
                    "The data's months",
                    "Back to the months of the data, 2008-05 to 2010-11.",
                    f"from={epoch_ms(TIME_FROM)}&to={epoch_ms(TIME_TO)}",
                ),
            ]
        )
    )
    for panel in (
        prediction_drift_panel(),
        alert_list_panel(),
        drifted_columns_panel(),
        missing_values_panel(),
        drift_p_value_panel(),
        realized_z_panel(),
        estimated_roc_auc_panel(),
        estimated_drop_panel(),
        realized_roc_auc_panel(),
        subscription_panel(),
        model_performance_panel(),
        pipeline_runs_panel(),
    ):
        builder = builder.with_panel(panel)
    builder = builder.with_row(live_row())
    for panel in live_row_panels:
        builder = builder.with_panel(panel)
    return builder.build()


def render() -> str:
    """The dashboard JSON, as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(json.loads(JSONEncoder().encode(build())), indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
