"""Grafana as code: the generated dashboard is current and draws the retraining policy's default
thresholds; the provisioning parses, reads only the stack's four datasources and commits no
secret; after a short replay on PostgreSQL every monthly panel's SQL and the alert rules' queries
return what the panels and rules expect; an alert of a provisioned rule, posted as Grafana posts
it, leads to exactly one retrain. The row "Live traffic": every PromQL expression parses and reads
only the series the service and Ray Serve export, and every SQL query returns, after served
traffic, the numbers computed here from the rows inserted."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import promql_parser
import psycopg2
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from bank_marketing.monitoring import store
from bank_marketing.monitoring.policy import RetrainRule
from bank_marketing.monitoring.served import (
    LIVE,
    SHADOW,
    insert_served,
    read_served,
    record_outcome,
)
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.runner import failure_message, run_training
from bank_marketing.orchestration.sensors import (
    TRIGGER_TAG,
    RetrainPolicy,
    retrain_on_grafana_alert,
)
from bank_marketing.serving.app import THRESHOLD
from bank_marketing.serving.webhook import create_webhook_router
from bank_marketing_tests.conftest import (
    POSTGRES,
    REPLAY_FIRST_AS_OF,
    REPLAYED_MONTHS,
    REPO,
    ReplayedStack,
)
from bank_marketing_tests.test_sensors import notification, post, requested, tick

GRAFANA = REPO / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DASHBOARD_JSON = GRAFANA / "dashboards" / "bank-marketing.json"
MONITORING, MLFLOW, DAGSTER, PROMETHEUS = (
    "bank-marketing-monitoring",
    "bank-marketing-mlflow",
    "bank-marketing-dagster",
    "bank-marketing-prometheus",
)
# The database each datasource reads in the stack, and its role in the replayed stack.
DATABASES = {MONITORING: "bank_marketing", MLFLOW: "mlflow", DAGSTER: "dagster"}
DATASOURCE_ROLES = {MONITORING: "monitoring", MLFLOW: "mlflow", DAGSTER: "dagster"}
# The only variables the provisioning may read from Grafana's environment.
PROVISIONING_VARIABLES = {"GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD", "BANK_MARKETING_WEBHOOK_TOKEN"}
# The session's short replay (conftest.replayed_stack).
FIRST_AS_OF, REPLAYED = REPLAY_FIRST_AS_OF, REPLAYED_MONTHS

# What each panel's query returns, in order (the panels refer to these names).
PANEL_COLUMNS = {
    "Prediction drift per month": ["time", "prediction drift"],
    "Drifted input columns per month": [
        "time",
        "drifted columns",
        "threshold (0.5 of the inputs)",
    ],
    "Share of missing values per month": ["time", "missing values"],
    "Prediction drift against its noise": ["time", "drift p-value", "retrain below 0.01"],
    "Realized ROC AUC against expected": ["time", "realized z", "retrain below -2"],
    "Estimated ROC AUC (CBPE, before labels)": [
        "time",
        "estimated ROC AUC (CBPE)",
        "realized ROC AUC",
        "expected ROC AUC",
    ],
    "Estimated ROC AUC drop (CBPE)": ["time", "estimated drop", "retrain above 0.05"],
    "Realized ROC AUC per month": ["time", "ROC AUC"],
    "Subscription rate against mean predicted probability": [
        "time",
        "subscription rate",
        "mean predicted probability",
    ],
    "Model performance per registered version": [
        "version",
        "train ROC AUC",
        "validation ROC AUC",
    ],
    "Pipeline runs": ["job", "partition", "status", "trigger", "start", "duration"],
}


def load_generator() -> ModuleType:
    """grafana/dashboard.py, which is a script beside the provisioning, not a package module."""
    spec = importlib.util.spec_from_file_location("grafana_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The rule on one retraining signal, as the generator declares it.
SIGNAL_ALERT = load_generator().SIGNAL_ALERT


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def live_row() -> dict[str, Any]:
    (row,) = [panel for panel in dashboard()["panels"] if panel["type"] == "row"]
    return row


def sql_panels() -> list[dict[str, Any]]:
    """The panels above the live row: months, registered versions, pipeline runs (SQL)."""
    top = live_row()["gridPos"]["y"]
    return [
        panel
        for panel in dashboard()["panels"]
        if panel.get("targets") and panel["gridPos"]["y"] < top
    ]


def live_panels() -> list[dict[str, Any]]:
    """The panels of the row "Live traffic" (below it: the row is open, so they follow it)."""
    top = live_row()["gridPos"]["y"]
    return [panel for panel in dashboard()["panels"] if panel["gridPos"]["y"] > top]


def live_targets(kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of the live row's queries of a datasource type."""
    return [
        (panel, target)
        for panel in live_panels()
        for target in panel["targets"]
        if target["datasource"]["type"] == kind
    ]


def provisioning_files() -> dict[str, Any]:
    return {
        str(path.relative_to(PROVISIONING)): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(PROVISIONING.rglob("*.yaml"))
    }


def provisioned(kind: str) -> dict[str, Any]:
    (config,) = [value for name, value in provisioning_files().items() if name.startswith(kind)]
    return config


def alerting(key: str) -> list[dict[str, Any]]:
    """Every entry under ``key`` (groups, contactPoints, policies) in provisioning/alerting/."""
    return [
        entry
        for name, config in provisioning_files().items()
        if name.startswith("alerting/")
        for entry in config.get(key, [])
    ]


# The provisioned alert rules by title: the prediction drift rule, and the rule on one retraining
# signal (dashboard.SIGNAL_ALERT).
DRIFT_RULE = "Prediction drift"
SIGNAL_RULE = "Prediction drift beyond noise"


def alert_rule(title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rule called ``title``, and its group."""
    (group,) = alerting("groups")
    (rule,) = [rule for rule in group["rules"] if rule["title"] == title]
    return group, rule


def drift_rule() -> tuple[dict[str, Any], dict[str, Any]]:
    return alert_rule(DRIFT_RULE)


def rule_query(rule: Mapping[str, Any]) -> dict[str, Any]:
    (query,) = [item for item in rule["data"] if item["datasourceUid"] != "__expr__"]
    return query


# Grafana's macros, expanded as its PostgreSQL backend does before a query runs (Grafana's
# pkg/tsdb/grafana-postgresql-datasource/macros.go): same pattern, so an argument cannot hold a
# ')'; times in UTC, RFC 3339 with the fraction only when there is one. Only the macros this
# dashboard and the alert use are known; any other is an error, as it is in Grafana.


MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def grafana_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return f"{moment:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """``sql`` with $__timeFilter(expr), $__timeFrom() and $__timeTo() over [start, end]."""

    def expand(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2).strip()
        if name == "__timeFilter":
            if not argument:
                raise ValueError("$__timeFilter needs a column")
            return f"{argument} BETWEEN '{grafana_time(start)}' AND '{grafana_time(end)}'"
        if name == "__timeFrom":
            return f"'{grafana_time(start)}'"
        if name == "__timeTo":
            return f"'{grafana_time(end)}'"
        raise ValueError(f"unknown macro ${name}")

    return MACRO.sub(expand, sql)


def parse_grafana_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# A notification of the provisioned rule, as Grafana's webhook contact point sends it.


PRINTF_VALUE = re.compile(r'\{\{ printf "(%\.\df)" \$values\.B\.Value \}\}')


def grafana_alert(
    month: str, value: float, starts_at: datetime, title: str = DRIFT_RULE
) -> dict[str, Any]:
    """One firing alert of the rule ``title``: its labels are the rule's, Grafana's and the
    query's."""
    group, rule = alert_rule(title)
    labels = {
        "alertname": rule["title"],
        "grafana_folder": group["folder"],
        **rule["labels"],
        "month": month,
    }
    annotations = {
        key: PRINTF_VALUE.sub(
            lambda match: match.group(1) % value, re.sub(r"\s+", " ", text)
        ).replace("{{ $labels.month }}", month)
        for key, text in rule["annotations"].items()
    }
    assert not any("{{" in text for text in annotations.values()), annotations
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"http://grafana:3000/alerting/grafana/{rule['uid']}/view?orgId=1",
        "fingerprint": fingerprint,
        "silenceURL": f"http://grafana:3000/alerting/silence/new?matcher=month%3D{month}",
        "dashboardURL": f"http://grafana:3000/d/{rule['dashboardUid']}?orgId=1",
        "panelURL": f"http://grafana:3000/d/{rule['dashboardUid']}?orgId=1&viewPanel="
        f"{rule['panelId']}",
        "values": {"B": value, "C": 1},
        "valueString": f"[ var='B' labels={{month={month}}} value={value} ], "
        f"[ var='C' labels={{month={month}}} value=1 ]",
    }


def grafana_notification(alert: dict[str, Any]) -> dict[str, Any]:
    """The envelope, grouped as the provisioned policy groups (by its group_by labels)."""
    (policy,) = alerting("policies")
    (contact_point,) = alerting("contactPoints")
    body = notification(alert)
    group_labels = {name: alert["labels"][name] for name in policy["group_by"]}
    body.update(
        receiver=contact_point["name"],
        groupLabels=group_labels,
        commonLabels=alert["labels"],
        commonAnnotations=alert["annotations"],
        groupKey="{}:{"
        + ", ".join(f'{key}="{value}"' for key, value in sorted(group_labels.items()))
        + "}",
        title=f"[FIRING:1] {alert['labels']['alertname']} ({alert['labels']['month']})",
    )
    return body


def webhook_client(db_url: str) -> TestClient:
    """The receiver as the service mounts it, with the token test_sensors' post() sends."""
    app = FastAPI()
    app.include_router(create_webhook_router(db_url, "token"))
    return TestClient(app)


# The generated dashboard and the provisioning files.


def test_the_committed_dashboard_is_what_the_generator_builds() -> None:
    generator = load_generator()
    assert generator.OUTPUT == DASHBOARD_JSON
    assert DASHBOARD_JSON.read_text(encoding="utf-8") == generator.render(), (
        "grafana/dashboards/bank-marketing.json is stale: run `uv run python grafana/dashboard.py`"
    )


def test_every_provisioning_file_is_grafana_provisioning_yaml() -> None:
    files = provisioning_files()
    assert set(files) == {
        "alerting/contact-points.yaml",
        "alerting/policies.yaml",
        "alerting/rules.yaml",
        "dashboards/bank-marketing.yaml",
        "datasources/bank-marketing.yaml",
    }
    kinds = {
        "alerting/contact-points.yaml": "contactPoints",
        "alerting/policies.yaml": "policies",
        "alerting/rules.yaml": "groups",
        "dashboards/bank-marketing.yaml": "providers",
        "datasources/bank-marketing.yaml": "datasources",
    }
    for name, config in files.items():
        assert config["apiVersion"] == 1, name
        assert set(config) == {"apiVersion", kinds[name]}, name
        assert config[kinds[name]], name
    (provider,) = provisioned("dashboards")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False


def test_the_datasources_are_the_stacks_three_databases_with_fixed_uids() -> None:
    sources = [
        source
        for source in provisioned("datasources")["datasources"]
        if source["type"] != "prometheus"
    ]
    assert {source["uid"]: source["jsonData"]["database"] for source in sources} == DATABASES
    for source in sources:
        assert source["type"] == "grafana-postgresql-datasource"
        assert source["url"] == "postgres:5432"
        assert source["user"] == "$GRAFANA_DB_USER"
        assert source["secureJsonData"] == {"password": "$GRAFANA_DB_PASSWORD"}
        assert source["editable"] is False
    assert [source["uid"] for source in sources if source.get("isDefault")] == [MONITORING]


def test_the_prometheus_datasource_is_the_stacks_prometheus_service() -> None:
    (source,) = [
        source
        for source in provisioned("datasources")["datasources"]
        if source["type"] == "prometheus"
    ]
    assert source["uid"] == PROMETHEUS
    # The compose service's name and Prometheus's port, inside the compose network.
    services = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    assert "prometheus" in services
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy" and source["editable"] is False
    assert not source.get("isDefault")
    # No credentials: the compose network is its boundary.
    assert not {"user", "secureJsonData", "basicAuth"} & set(source)
    # The scrape interval: Grafana's $__rate_interval is then at least four scrapes.
    assert source["jsonData"]["timeInterval"] == "10s"


def test_every_panel_and_the_alert_read_a_provisioned_datasource() -> None:
    uids = {source["uid"] for source in provisioned("datasources")["datasources"]}
    panels = dashboard()["panels"]
    assert {panel["title"] for panel in sql_panels()} == set(PANEL_COLUMNS)
    assert [panel["type"] for panel in panels if not panel.get("targets")] == ["alertlist", "row"]
    for panel in sql_panels():
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["rawQuery"] is True and target["rawSql"].strip(), panel["title"]
    (group,) = alerting("groups")
    assert [rule["title"] for rule in group["rules"]] == [DRIFT_RULE, SIGNAL_RULE]
    assert len({rule["uid"] for rule in group["rules"]}) == len(group["rules"])
    for rule in group["rules"]:
        assert {item["datasourceUid"] for item in rule["data"]} <= uids | {"__expr__"}
        assert rule_query(rule)["datasourceUid"] == MONITORING
        assert rule_query(rule)["model"]["datasource"]["uid"] == MONITORING


def environment_references(value: Any, skip: frozenset[str] = frozenset()) -> set[str]:
    """The $VAR / ${VAR} names Grafana expands in provisioning values (not under ``skip`` keys,
    which Grafana keeps raw: a rule's query model and its annotation templates)."""
    if isinstance(value, dict):
        return {
            name
            for key, item in value.items()
            if key not in skip
            for name in environment_references(item, skip)
        }
    if isinstance(value, list):
        return {name for item in value for name in environment_references(item, skip)}
    if isinstance(value, str):
        return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value))
    return set()


SECRET_KEY = re.compile(r"password|secret|token|credential|apikey|api_key", re.IGNORECASE)
VARIABLE = re.compile(r"^\$(\{[A-Z][A-Z0-9_]*\}|[A-Z][A-Z0-9_]*)$")


def secret_values(value: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [pair for k, item in value.items() for pair in secret_values(item, str(k))]
    if isinstance(value, list):
        return [pair for item in value for pair in secret_values(item, key)]
    return [(key, value)] if SECRET_KEY.search(key) else []


def test_no_secret_is_committed_only_environment_variables() -> None:
    files = provisioning_files()
    for name, config in files.items():
        for key, value in secret_values(config):
            assert isinstance(value, str) and VARIABLE.match(value), f"{name}: {key}={value!r}"
    references = set().union(
        *(
            environment_references(config, frozenset({"model", "annotations"}))
            for config in files.values()
        )
    )
    assert references == PROVISIONING_VARIABLES
    (contact_point,) = alerting("contactPoints")
    (receiver,) = contact_point["receivers"]
    assert receiver["settings"]["authorization_credentials"] == "$BANK_MARKETING_WEBHOOK_TOKEN"
    # No URL with credentials, nor a bearer token, anywhere in grafana/.
    for path in GRAFANA.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".md", ".py"}:
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"://[^/\s:@'\"]+:[^/\s@'\"]+@", text), path
            assert not re.search(r"Bearer [A-Za-z0-9._~+/-]{8,}", text), path
    readme = (GRAFANA / "README.md").read_text(encoding="utf-8")
    assert all(variable in readme for variable in PROVISIONING_VARIABLES)


def test_the_dashboard_opens_on_the_datas_months_in_utc() -> None:
    board = dashboard()
    start = parse_grafana_time(board["time"]["from"])
    end = parse_grafana_time(board["time"]["to"])
    assert start <= datetime(2008, 5, 1, tzinfo=UTC) and end >= datetime(2010, 11, 1, tzinfo=UTC)
    assert end - start < timedelta(days=3 * 366)  # the data's months, not years of empty axis
    assert board["timezone"] == "utc"  # a month is midnight UTC on its first day
    assert board["uid"] == "bank-marketing"
    for panel in sql_panels():
        (target,) = panel["targets"]
        if panel["type"] == "timeseries":
            assert target["format"] == "time_series", panel["title"]
            assert "month::timestamp AT TIME ZONE 'UTC' AS \"time\"" in target["rawSql"]
            assert "$__timeFilter(month)" in target["rawSql"], panel["title"]
        else:
            assert target["format"] == "table", panel["title"]
            assert "$__timeFrom()" in target["rawSql"], panel["title"]


# Each retrain_signals column an alert rule or a panel compares with a threshold: the side that
# retrains (Grafana's threshold evaluator) and the retraining policy's default threshold.
POLICY = RetrainRule()
POLICY_THRESHOLDS = {
    "prediction_drift": ("gt", POLICY.prediction_drift_threshold),
    "drift_p_value": ("lt", POLICY.drift_p_value_threshold),
    "realized_z": ("lt", -POLICY.realized_z_threshold),
    "estimated_drop": ("gt", POLICY.estimated_drop_threshold),
}
# The panels that draw a signal's threshold as a series: the signal, and the series' name.
THRESHOLD_SERIES = {
    "Prediction drift against its noise": ("drift_p_value", "retrain below 0.01"),
    "Realized ROC AUC against expected": ("realized_z", "retrain below -2"),
    "Estimated ROC AUC drop (CBPE)": ("estimated_drop", "retrain above 0.05"),
}
DASHED = {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}


def overrides_of(panel: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    (override,) = [
        override
        for override in panel["fieldConfig"]["overrides"]
        if override["matcher"] == {"id": "byName", "options": name}
    ]
    return override["properties"]


def test_the_thresholds_drawn_are_the_retraining_policys_defaults() -> None:
    """The generator writes the defaults of RetrainRule as numbers; they must not drift apart."""
    generator = load_generator()
    assert POLICY.prediction_drift_threshold == generator.PREDICTION_DRIFT_THRESHOLD
    assert POLICY.drift_p_value_threshold == generator.DRIFT_P_VALUE_THRESHOLD
    assert POLICY.realized_z_threshold == generator.REALIZED_Z_THRESHOLD
    assert POLICY.estimated_drop_threshold == generator.ESTIMATED_DROP_THRESHOLD
    panels = {panel["title"]: panel for panel in dashboard()["panels"]}
    steps = panels["Prediction drift per month"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == POLICY.prediction_drift_threshold
    for title, (column, series) in THRESHOLD_SERIES.items():
        side, threshold = POLICY_THRESHOLDS[column]
        assert series == f"retrain {'above' if side == 'gt' else 'below'} {threshold:g}", title
        (target,) = panels[title]["targets"]
        assert f"{column} AS " in target["rawSql"], title
        drawn = re.search(rf'(\S+) AS "{re.escape(series)}"', target["rawSql"])
        assert drawn and float(drawn[1]) == threshold, title


def test_thresholds_are_dashed_lines() -> None:
    panels = {panel["title"]: panel for panel in dashboard()["panels"]}
    drift = panels["Prediction drift per month"]["fieldConfig"]["defaults"]
    assert drift["custom"]["thresholdsStyle"] == {"mode": "dashed"}
    assert [step["value"] for step in drift["thresholds"]["steps"]] == [None, 0.1]
    assert DASHED in overrides_of(
        panels["Drifted input columns per month"], "threshold (0.5 of the inputs)"
    )
    for title, (_, series) in THRESHOLD_SERIES.items():
        assert DASHED in overrides_of(panels[title], series), title
        assert series in PANEL_COLUMNS[title], title
    # p-values from about 0.002 to 1: on a linear axis the small ones, that matter, are one line.
    p_values = panels["Prediction drift against its noise"]["fieldConfig"]["defaults"]
    assert p_values["custom"]["scaleDistribution"] == {"type": "log", "log": 10}
    # The expected level is a reference, not data, either.
    estimate = panels["Estimated ROC AUC (CBPE, before labels)"]
    assert any(
        prop["id"] == "custom.lineStyle" for prop in overrides_of(estimate, "expected ROC AUC")
    )


def check_latest_fresh_month_rule(title: str, evaluator: str, threshold: float) -> str:
    """The rule ``title`` fires on the newest month alone, while its report is fresh, when its
    value is past ``threshold`` (Grafana's ``evaluator``), labelled by the month; its SQL."""
    group, rule = alert_rule(title)
    assert group["folder"] and group["name"]
    query = rule_query(rule)
    sql = query["model"]["rawSql"]
    assert query["model"]["format"] == "table"
    alias = re.search(r"to_char\((\w+)\.month, 'YYYY-MM'\) AS month", sql)
    assert alias, sql
    assert f"$__timeFilter({alias[1]}.computed_at)" in sql
    # The newest month is the newest drift report's, in every table: a re-run of an old month
    # is never the newest.
    assert f"{alias[1]}.month = (SELECT max(month) FROM monitoring.drift_reports)" in sql
    # Fresh: reports computed in the last day, not "any month ever".
    assert query["relativeTimeRange"] == {"from": 86400, "to": 0}
    # A reduce / threshold chain ending in the condition.
    expressions = {item["refId"]: item["model"] for item in rule["data"]}
    condition = expressions[rule["condition"]]
    assert condition["type"] == "threshold"
    (found,) = [c["evaluator"] for c in condition["conditions"]]
    assert found == {"type": evaluator, "params": [threshold]}
    reduce = expressions[condition["expression"]]
    assert reduce["type"] == "reduce" and reduce["expression"] == query["refId"]
    # Hours, not seconds; no data is normal; labels and annotations for the receiver and people.
    assert rule["for"] == "1h" and group["interval"] == "30m"
    assert rule["noDataState"] == "OK"
    # Never Error or Alerting: both send an alert that names no month to the retraining webhook.
    assert rule["execErrState"] in {"KeepLast", "OK"}
    assert {"severity", "team"} <= set(rule["labels"])
    assert {"summary", "description"} <= set(rule["annotations"])
    assert "{{ $labels.month }}" in rule["annotations"]["summary"]
    assert PRINTF_VALUE.search(rule["annotations"]["summary"])
    assert f"{threshold:g}" in rule["annotations"]["summary"]
    assert rule["dashboardUid"] == dashboard()["uid"]
    return sql


def test_the_alert_is_the_latest_fresh_month_above_0_1_with_a_month_label() -> None:
    sql = check_latest_fresh_month_rule(DRIFT_RULE, *POLICY_THRESHOLDS["prediction_drift"])
    assert POLICY_THRESHOLDS["prediction_drift"] == ("gt", 0.1)
    assert "FROM monitoring.drift_reports AS d" in sql
    assert "d.prediction_drift AS prediction_drift" in sql
    # Linked to the prediction drift panel, where Grafana draws the alert's state changes.
    _, rule = drift_rule()
    titles = {panel["id"]: panel["title"] for panel in dashboard()["panels"]}
    assert titles[rule["panelId"]] == "Prediction drift per month"


def test_the_signal_alert_is_the_latest_fresh_month_past_its_threshold_with_a_month_label():
    """The second rule is dashboard.SIGNAL_ALERT: its signal, threshold and panel."""
    alert = SIGNAL_ALERT
    assert alert.title == SIGNAL_RULE
    # The policy's default threshold, on the side where the policy's signal fires.
    assert (alert.evaluator, alert.threshold) == POLICY_THRESHOLDS[alert.column]
    sql = check_latest_fresh_month_rule(alert.title, alert.evaluator, alert.threshold)
    assert "FROM monitoring.retrain_signals AS s" in sql
    assert f"s.{alert.column} AS {alert.column}" in sql
    assert f"s.{alert.column} IS NOT NULL" in sql
    # Linked to the panel that draws the signal.
    _, rule = alert_rule(alert.title)
    assert rule["panelId"] == alert.panel_id
    (panel,) = [panel for panel in dashboard()["panels"] if panel["id"] == alert.panel_id]
    (target,) = panel["targets"]
    assert f"{alert.column} AS " in target["rawSql"]
    assert "FROM monitoring.retrain_signals" in target["rawSql"]
    # The other rule's wait and states, and the same routing: a month label for the webhook.
    _, first = drift_rule()
    for key in ("for", "noDataState", "execErrState", "labels", "dashboardUid"):
        assert rule[key] == first[key], key


def test_alerts_go_to_the_webhook_once_per_month_repeated_in_hours() -> None:
    (contact_point,) = alerting("contactPoints")
    (receiver,) = contact_point["receivers"]
    assert receiver["type"] == "webhook"
    assert receiver["settings"]["url"] == "http://serving:8000/webhooks/grafana"
    assert receiver["settings"]["authorization_scheme"] == "Bearer"
    assert "httpHeaders" not in receiver["settings"]
    (policy,) = alerting("policies")
    assert policy["receiver"] == contact_point["name"]
    assert {"alertname", "month"} <= set(policy["group_by"])
    assert policy["group_wait"] == "1m"
    assert policy["group_interval"].endswith("h") and policy["repeat_interval"].endswith("h")


def test_macros_expand_as_grafanas_postgres_backend_does() -> None:
    start = datetime(2008, 4, 1, tzinfo=UTC)
    end = datetime(2010, 12, 1, 10, 30, 0, 250000, tzinfo=UTC)
    sql = "SELECT 1 WHERE $__timeFilter(d.month) AND x BETWEEN $__timeFrom() AND $__timeTo()"
    assert expand_macros(sql, start, end) == (
        "SELECT 1 WHERE d.month BETWEEN '2008-04-01T00:00:00Z' AND '2010-12-01T10:30:00.25Z' "
        "AND x BETWEEN '2008-04-01T00:00:00Z' AND '2010-12-01T10:30:00.25Z'"
    )
    with pytest.raises(ValueError, match="unknown macro"):
        expand_macros("SELECT $__timeGroup(month, '1d')", start, end)


@pytest.mark.parametrize(("title", "value"), [(DRIFT_RULE, 0.31), (SIGNAL_RULE, 0.002)])
def test_an_alert_of_the_rule_in_grafanas_format_requests_one_retrain(
    tmp_path: Path, title: str, value: float
) -> None:
    """Unit level (SQLite, ephemeral instance); the integration test below runs the retrain."""
    monitoring_db = MonitoringDatabase(url=f"sqlite:///{tmp_path / 'monitoring.db'}")
    webhook = webhook_client(monitoring_db.url)
    body = grafana_notification(grafana_alert("2009-04", value, datetime.now(UTC), title))
    with dg.DagsterInstance.ephemeral() as instance:
        assert post(webhook, body)["new_firing"] == 1
        first = tick(retrain_on_grafana_alert, instance, None, monitoring_db=monitoring_db)
        assert [partition for partition, _ in requested(first)] == ["2009-04-01"]
        (request,) = first.run_requests
        assert request.tags["bank_marketing/alert_name"] == title
        # Grafana repeats the notification every repeat_interval: stored once, nothing new.
        assert post(webhook, body)["new"] == 0
        again = tick(retrain_on_grafana_alert, instance, first.cursor, monitoring_db=monitoring_db)
        assert not again.run_requests


# The row "Live traffic": Prometheus series of the service and Ray Serve, and the served tables.


# Each series the live row may read, with its own labels: the service's
# (bank_marketing/serving/metrics.py, prefixed ray_ by Ray's metrics export) and Ray Serve's.
def histogram(name: str, labels: set[str]) -> dict[str, set[str]]:
    return {
        f"{name}_bucket": labels | {"le"},
        f"{name}_sum": labels,
        f"{name}_count": labels,
    }


SERIES: dict[str, set[str]] = {
    "ray_bank_marketing_requests_total": {"model_version", "route", "status"},
    **histogram("ray_bank_marketing_request_latency_ms", {"model_version", "route"}),
    **histogram("ray_bank_marketing_probability", {"model_version", "role"}),
    "ray_bank_marketing_served_records_total": {"outcome"},
    "ray_bank_marketing_served_queue": set(),
    "ray_serve_num_http_requests_total": {"application", "route", "method", "status_code"},
    **histogram(
        "ray_serve_http_request_latency_ms", {"application", "route", "method", "status_code"}
    ),
}
# What Ray's export adds to every series of a replica, and Prometheus to every scraped one.
RAY_LABELS = {
    "application",
    "deployment",
    "replica",
    "Component",
    "NodeAddress",
    "SessionName",
    "WorkerId",
    "instance",
    "job",
}
# Grafana's variables in PromQL, as a range query of a day at Grafana's default resolution
# would fill them in (the datasource's timeInterval is the 10 s scrape).
PROMQL_VARIABLES = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1d"}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def declared_series() -> dict[str, set[str]]:
    """The series bank_marketing/serving/metrics.py declares with ray.serve.metrics, named and
    labelled as Ray's export names them (read from its source: nothing is registered)."""
    tree = ast.parse((REPO / "bank_marketing" / "serving" / "metrics.py").read_text())
    series: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "metrics"
        ):
            continue
        name = f"ray_{ast.literal_eval(node.args[0])}"
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        tags = set(ast.literal_eval(keywords["tag_keys"])) if "tag_keys" in keywords else set()
        if node.func.attr == "Counter":
            series[f"{name}_total"] = tags
        elif node.func.attr == "Histogram":
            series.update(histogram(name, tags))
        else:
            assert node.func.attr == "Gauge", ast.unparse(node)
            series[name] = tags
    return series


def test_the_services_series_are_those_it_declares() -> None:
    """The names and labels the dashboard reads are what the service exports."""
    assert declared_series() == {
        name: labels for name, labels in SERIES.items() if name.startswith("ray_bank_marketing_")
    }


def parse_promql(expr: str) -> promql_parser.Expr:
    for variable, value in PROMQL_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return promql_parser.parse(expr)


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(
        expr,
        lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return found


def output_labels(node: promql_parser.Expr) -> set[str] | None:
    """The labels of the vectors ``node`` yields (None: a scalar), checking on the way that every
    grouping and every vector match names labels its operands have."""
    if isinstance(node, promql_parser.VectorSelector):
        return SERIES[node.name] | RAY_LABELS
    if isinstance(node, promql_parser.MatrixSelector):
        return output_labels(node.vector_selector)
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return output_labels(node.expr)
    if isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral):
        return None
    if isinstance(node, promql_parser.AggregateExpr):
        inner = output_labels(node.expr)
        assert inner is not None, f"{node}: aggregates a scalar"
        if node.modifier is None:
            return set()
        named = set(node.modifier.labels)
        assert named <= inner, f"{node}: groups by {named - inner}, which it does not have"
        return named if node.modifier.type == promql_parser.AggModifierType.By else inner - named
    if isinstance(node, promql_parser.Call):
        vectors = [labels for arg in node.args if (labels := output_labels(arg)) is not None]
        if node.func.name == "histogram_quantile":
            (labels,) = vectors
            assert "le" in labels, f"{node}: histogram_quantile needs the buckets' le"
            return labels - {"le"}
        return vectors[0] if vectors else None
    if isinstance(node, promql_parser.BinaryExpr):
        lhs, rhs = output_labels(node.lhs), output_labels(node.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        if str(node.op) in {"and", "unless"}:
            return lhs
        # One-to-one matching on every label (no on/ignoring here): both sides must have the same.
        assert node.modifier is None or node.modifier.matching is None, str(node)
        assert lhs == rhs, f"{node}: {sorted(lhs)} against {sorted(rhs)} never match"
        return lhs
    raise AssertionError(f"{node}: {type(node).__name__} is not expected on this dashboard")


def promql_queries() -> list[tuple[str, str, str]]:
    """(where, expr, legend) of every PromQL expression of the dashboard, the annotation's too."""
    queries = [
        (f"{panel['title']} {target['refId']}", target["expr"], target.get("legendFormat", ""))
        for panel, target in live_targets("prometheus")
    ]
    for annotation in dashboard()["annotations"]["list"]:
        if annotation["datasource"]["type"] == "prometheus":
            queries.append((annotation["name"], annotation["expr"], annotation["titleFormat"]))
    return queries


def test_the_live_row_follows_the_monthly_panels_and_reads_prometheus_and_served_tables():
    row = live_row()
    assert row["title"] == "Live traffic" and row["collapsed"] is False and row["panels"] == []
    panels = dashboard()["panels"]
    assert all(panel["gridPos"]["y"] + panel["gridPos"]["h"] <= row["gridPos"]["y"]
               for panel in panels if panel["gridPos"]["y"] < row["gridPos"]["y"])  # fmt: skip
    live = live_panels()
    assert panels[-len(live) :] == live and panels[-len(live) - 1] == row
    assert len({panel["id"] for panel in panels}) == len(panels)
    titles = [panel["title"] for panel in live]
    assert titles == list(LIVE_PANELS)
    for panel in live:
        assert panel["type"] == "timeseries", panel["title"]
        kinds = {target["datasource"]["type"] for target in panel["targets"]}
        assert kinds == {LIVE_PANELS[panel["title"]]}, panel["title"]
        uid = PROMETHEUS if kinds == {"prometheus"} else MONITORING
        assert panel["datasource"] == {"type": kinds.pop(), "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        # The time picker rules (a panel's relative time would be ignored on the data's absolute
        # months and would hide the rollover annotation).
        assert "timeFrom" not in panel and "timeShift" not in panel
    # A way to the live range and back.
    links = {link["title"]: link["url"] for link in dashboard()["links"]}
    assert links["Live traffic: the last 24 hours"] == "/d/bank-marketing?from=now-24h&to=now"
    start, end = dashboard_range()
    assert links["The data's months"] == (
        f"/d/bank-marketing?from={start.timestamp() * 1000:.0f}&to={end.timestamp() * 1000:.0f}"
    )


# The live row's panels, top to bottom, and the datasource type each reads.
LIVE_PANELS = {
    "Predictions per second by model version": "prometheus",
    "Prediction latency p50 and p99 by model version": "prometheus",
    "Client and server errors per second": "prometheus",
    "Mean predicted probability by model version and role": "prometheus",
    "Answered records kept and dropped": "prometheus",
    "Answered records per hour by model version": "grafana-postgresql-datasource",
    "Shadow agreement by day": "grafana-postgresql-datasource",
    "Realized ROC AUC of served traffic by day": "grafana-postgresql-datasource",
    "Drift of served traffic by day": "grafana-postgresql-datasource",
}


@pytest.mark.parametrize(("where", "expr", "legend"), promql_queries(), ids=lambda v: str(v)[:60])
def test_every_promql_expression_parses_and_reads_only_the_exported_series(
    where: str, expr: str, legend: str
) -> None:
    parsed = parse_promql(expr)
    used = selectors(parsed)
    assert used, where
    for selector in used:
        assert selector.name in SERIES, f"{where}: {selector.name} is not an exported series"
        for matcher in selector.matchers.matchers:
            assert matcher.name in SERIES[selector.name] | RAY_LABELS, f"{where}: {matcher}"
    labels = output_labels(parsed)
    assert labels is not None, where
    # The legend names only labels the result keeps.
    assert set(LEGEND_LABEL.findall(legend)) <= labels, f"{where}: {legend} against {labels}"
    # Counters and histograms are read as rates (or counted, to see a series exist), never as
    # raw totals, which restart with each replica.
    read = set()

    def rated_or_counted(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            read.add(node.vector_selector.name)
        elif isinstance(node, promql_parser.AggregateExpr) and str(node.op) == "count":
            read.update(selector.name for selector in selectors(node.expr))

    promql_parser.walk(parsed, rated_or_counted)
    for selector in used:
        if selector.name.endswith(("_total", "_bucket", "_sum", "_count")):
            assert selector.name in read, f"{where}: {selector.name} read as a raw total"


def test_live_promql_reads_versions_quantiles_and_means_as_intended() -> None:
    targets = {
        (panel["title"], target["refId"]): parse_promql(target["expr"])
        for panel, target in live_targets("prometheus")
    }
    # Latency: histogram_quantile over the buckets' rate, summed by (le, model_version).
    latency = "Prediction latency p50 and p99 by model version"
    for ref_id, quantile in (("A", 0.5), ("B", 0.99)):
        call = targets[(latency, ref_id)]
        assert isinstance(call, promql_parser.Call) and call.func.name == "histogram_quantile"
        phi, grouped = call.args
        assert phi.val == quantile
        assert set(grouped.modifier.labels) == {"le", "model_version"}
        (selector,) = selectors(grouped)
        assert selector.name == "ray_bank_marketing_request_latency_ms_bucket"
        assert output_labels(call) == {"model_version"}
    # Mean probability: rate of the sum over rate of the count, by version and role.
    mean = targets[("Mean predicted probability by model version and role", "A")]
    assert isinstance(mean, promql_parser.BinaryExpr) and str(mean.op) == "/"
    assert [selector.name for selector in selectors(mean)] == [
        "ray_bank_marketing_probability_sum",
        "ray_bank_marketing_probability_count",
    ]
    assert output_labels(mean) == {"model_version", "role"}
    # Requests by version: a version's series ends when it stops answering (no zero tail).
    requests = targets[("Predictions per second by model version", "A")]
    assert output_labels(requests) == {"model_version"}
    assert str(requests.op) == ">" and requests.rhs.val == 0
    # 4xx and 5xx by status class; kept, dropped and duplicate by outcome; the queue.
    errors = "Client and server errors per second"
    for ref_id, status in (("A", "4.."), ("B", "5..")):
        (selector,) = selectors(targets[(errors, ref_id)])
        assert [(m.name, m.value) for m in selector.matchers.matchers] == [("status", status)]
    records = "Answered records kept and dropped"
    assert output_labels(targets[(records, "A")]) == {"outcome"}
    assert [s.name for s in selectors(targets[(records, "B")])] == [
        "ray_bank_marketing_served_queue"
    ]


def test_rollovers_are_marked_on_the_live_panels() -> None:
    """A mark where a version starts answering: its series now, and not a minute earlier."""
    (annotation,) = [
        annotation
        for annotation in dashboard()["annotations"]["list"]
        if annotation["datasource"]["type"] == "prometheus"
    ]
    assert annotation["datasource"]["uid"] == PROMETHEUS and annotation["enable"] is True
    assert annotation["filter"] == {
        "exclude": False,
        "ids": [panel["id"] for panel in live_panels()],
    }
    parsed = parse_promql(annotation["expr"])
    assert isinstance(parsed, promql_parser.BinaryExpr) and str(parsed.op) == "unless"
    now, before = selectors(parsed)
    assert now.name == before.name == "ray_bank_marketing_requests_total"
    assert now.offset is None and before.offset == timedelta(minutes=1)
    assert output_labels(parsed) == {"model_version"}
    assert "{{model_version}}" in annotation["titleFormat"]
    assert annotation["step"] == "1m"


def test_shadow_agreement_compares_at_the_services_threshold() -> None:
    assert load_generator().SUBSCRIBED_THRESHOLD == THRESHOLD
    for panel, target in live_targets("grafana-postgresql-datasource"):
        if panel["title"] == "Shadow agreement by day" and target["refId"] == "A":
            assert f"live.probability >= {THRESHOLD}" in target["rawSql"]
            assert f"shadow.probability >= {THRESHOLD}" in target["rawSql"]


def test_live_sql_returns_time_metric_and_one_value_over_the_time_picker() -> None:
    """Grafana names a series after the metric text when a query has three columns."""
    for panel, target in live_targets("grafana-postgresql-datasource"):
        sql = target["rawSql"]
        assert target["format"] == "time_series", panel["title"]
        assert re.search(r"\$__timeFilter\((live\.received_at|received_at|day)\)", sql), sql
        assert "AS metric" in sql and sql.rstrip().endswith("ORDER BY 1, 2"), panel["title"]
        # A UTC hour or day, whatever the session's time zone.
        assert "AT TIME ZONE 'UTC' AS \"time\"" in sql, panel["title"]


# After a short replay on PostgreSQL, laid out as the stack lays it out.


@dataclass(frozen=True)
class Stack:
    """The replayed system, its databases by the uid of the datasource that reads them."""

    replayed: ReplayedStack

    @property
    def defs(self) -> dg.Definitions:
        return self.replayed.defs

    @property
    def instance(self) -> dg.DagsterInstance:
        return self.replayed.instance

    @property
    def monitoring_url(self) -> str:
        return self.replayed.url("monitoring")

    def query(self, uid: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        database = self.replayed.databases[DATASOURCE_ROLES[uid]]
        connection = psycopg2.connect(**{**POSTGRES, "dbname": database})
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql)
                return [column.name for column in cursor.description], cursor.fetchall()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def stack(replayed_stack: ReplayedStack) -> Iterator[Stack]:
    """The session's short replay (conftest), with its environment set: a training run started
    here rebuilds the definitions from it."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in replayed_stack.environment.items():
            patch.setenv(variable, value)
        yield Stack(replayed_stack)


def dashboard_range() -> tuple[datetime, datetime]:
    time_range = dashboard()["time"]
    return parse_grafana_time(time_range["from"]), parse_grafana_time(time_range["to"])


@pytest.mark.integration
@pytest.mark.parametrize("panel", sql_panels(), ids=lambda panel: panel["title"])
def test_each_panel_query_returns_its_columns_and_rows(stack: Stack, panel: dict[str, Any]):
    """Over the dashboard's default time range, as Grafana would run it."""
    (target,) = panel["targets"]
    columns, rows = stack.query(
        target["datasource"]["uid"], expand_macros(target["rawSql"], *dashboard_range())
    )
    assert columns == PANEL_COLUMNS[panel["title"]]
    assert rows, f"{panel['title']}: no rows after the replay"
    if target["format"] == "time_series":
        times = [row[0] for row in rows]
        assert times == sorted(times)
        assert [f"{moment:%Y-%m}" for moment in times] == REPLAYED
        for moment in times:
            assert moment.utcoffset() == timedelta(0)
            assert (moment.day, moment.hour, moment.minute) == (1, 0, 0)
        # Numbers (PostgreSQL's numeric arrives as Decimal; Grafana reads it as a float).
        assert all(isinstance(value, int | float | Decimal) for row in rows for value in row[1:])
    elif panel["title"] == "Model performance per registered version":
        labels = [row[0] for row in rows]
        assert sum(label.endswith("(champion)") for label in labels) == 1
        assert all(0.0 <= value <= 1.0 for row in rows for value in row[1:])
    elif panel["title"] == "Pipeline runs":
        by_job = {(row[0], row[1]) for row in rows}
        assert ("training_job", FIRST_AS_OF) in by_job
        assert {("monitoring_job", f"{month}-01") for month in REPLAYED} <= by_job
        assert all(row[2] == "SUCCESS" and row[4] is not None and row[5] >= 0 for row in rows)


def alert_rows(
    stack: Stack, now: datetime, title: str = DRIFT_RULE
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The query of the rule ``title`` as Grafana runs it at ``now``, over the rule's relative
    time range."""
    _, rule = alert_rule(title)
    query = rule_query(rule)
    window = query["relativeTimeRange"]
    sql = expand_macros(
        query["model"]["rawSql"],
        now - timedelta(seconds=window["from"]),
        now - timedelta(seconds=window["to"]),
    )
    return stack.query(query["datasourceUid"], sql)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("title", "column"),
    [(DRIFT_RULE, "prediction_drift"), (SIGNAL_RULE, SIGNAL_ALERT.column)],
)
def test_the_alert_query_returns_the_newest_month_only_while_its_report_is_fresh(
    stack: Stack, title: str, column: str
):
    now = datetime.now(UTC)
    columns, rows = alert_rows(stack, now, title)
    # One number and string columns: Grafana makes the strings the alert's labels.
    assert columns == ["month", column]
    assert rows == [(REPLAYED[-1], pytest.approx(rows[0][1]))]
    (month, value) = rows[0]
    assert isinstance(month, str) and isinstance(value, float)
    # A day later the same report no longer fires; an older month never did.
    assert alert_rows(stack, now + timedelta(days=1, minutes=1), title)[1] == []
    assert alert_rows(stack, now - timedelta(days=1), title)[1] == []


@pytest.mark.integration
def test_the_alert_posted_to_the_receiver_leads_to_exactly_one_retrain_run(stack: Stack):
    """The alert of the replayed data, as Grafana posts it, through the receiver and the sensor
    on the stack's databases, to one finished training run as of the alert's month."""
    (_, rows) = alert_rows(stack, datetime.now(UTC))
    ((month, value),) = rows
    assert value > 0.1, f"{month}: prediction drift {value} would not fire"
    body = grafana_notification(grafana_alert(month, value, datetime.now(UTC)))
    webhook = webhook_client(stack.monitoring_url)
    monitoring_db = stack.defs.resources["monitoring_db"]
    # No cooldown: the replay may just have retrained as of this month (the cooldown has its own
    # tests in test_sensors).
    policy = RetrainPolicy(cooldown_months=0)
    instance = stack.instance

    assert post(webhook, body)["new_firing"] == 1
    first = tick(
        retrain_on_grafana_alert, instance, None, retrain_policy=policy, monitoring_db=monitoring_db
    )
    (request,) = first.run_requests
    assert request.partition_key == f"{month}-01"
    run = run_training(instance, request.partition_key, tags=request.tags, in_process=True)
    assert run.success, failure_message(run)
    triggered = instance.get_run_records(
        dg.RunsFilter(job_name="training_job", tags={TRIGGER_TAG: "retrain_on_grafana_alert"})
    )
    assert [record.dagster_run.tags["dagster/partition"] for record in triggered] == [f"{month}-01"]
    # Grafana's repeat of the same notification: stored once, no second run.
    assert post(webhook, body)["new"] == 0
    again = tick(
        retrain_on_grafana_alert,
        instance,
        first.cursor,
        retrain_policy=policy,
        monitoring_db=monitoring_db,
    )
    assert not again.run_requests


# The live row's SQL after served traffic, on PostgreSQL: the rows as the service and the daily
# served_traffic asset write them, the numbers computed here from the same rows.

# The dashboard's "now" for these tests, and the time picker's last three days before it.
LIVE_NOW = datetime(2026, 3, 4, 18, 0, tzinfo=UTC)
LIVE_RANGE = (LIVE_NOW - timedelta(days=3), LIVE_NOW)
# Version 4 is the champion; version 5 runs in shadow from 2026-03-03, then replaces it at 12:30
# on 2026-03-04 (a rollover inside an hour); one request every 20 minutes from before the range
# to after it.
SHADOW_FROM = datetime(2026, 3, 3, tzinfo=UTC)
ROLLOVER = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
TRAFFIC_FROM, TRAFFIC_TO = (
    datetime(2026, 3, 1, 12, tzinfo=UTC),
    datetime(2026, 3, 4, 19, tzinfo=UTC),
)


def served_answers() -> list[dict[str, Any]]:
    """served_predictions rows: 1 to 3 records a request; while version 5 runs in shadow it
    scores every record, except the records after the first of every fifth request."""
    rng = np.random.default_rng(7)
    rows = []
    moment, index = TRAFFIC_FROM, 0
    while moment < TRAFFIC_TO:
        live_version = "5" if moment >= ROLLOVER else "4"
        shadowed = SHADOW_FROM <= moment < ROLLOVER
        for record in range(1 + index % 3):
            probability = float(rng.uniform(0, 1))
            answer = {
                "request_id": f"request-{index:04d}",
                "record": record,
                "received_at": moment,
                "inputs": {"age": 30 + record},
                "latency_ms": 4.0,
            }
            rows.append(
                {**answer, "role": LIVE, "model_version": live_version, "probability": probability}
            )
            if shadowed and (record == 0 or index % 5):
                challenger = float(np.clip(probability + rng.normal(0, 0.2), 0, 1))
                rows.append(
                    {**answer, "role": SHADOW, "model_version": "5", "probability": challenger}
                )
        moment, index = moment + timedelta(minutes=20), index + 1
    return rows


def served_traffic_rows(answers: pd.DataFrame) -> list[dict[str, Any]]:
    """One served_traffic row a day, version and role, its realized quality from the reported
    outcomes (ROC AUC null with a single label); the drift numbers made up, one of them null."""
    rows = []
    answers = answers.assign(day=answers["received_at"].dt.date)
    groups = answers.groupby(["day", "model_version", "role"], sort=True)
    for number, ((day, version, role), group) in enumerate(groups):
        labelled = group.dropna(subset=["subscribed"])
        truth = labelled["subscribed"].astype(bool)
        both = truth.nunique() == 2
        rows.append(
            {
                "day": day,
                "model_version": version,
                "role": role,
                "requests": group["request_id"].nunique(),
                "rows": len(group),
                "reference_rows": 5000,
                "input_columns": 11,
                "drifted_columns": number % 4,
                "drifted_share": (number % 4) / 11,
                "prediction_drift": None if number == 0 else 0.02 * number,
                "prediction_drift_method": "wasserstein",
                "missing_share": 0.0,
                "mean_probability": float(group["probability"].mean()),
                "labelled_rows": len(labelled),
                "roc_auc": float(roc_auc_score(truth, labelled["probability"])) if both else None,
                "accuracy": float(((labelled["probability"] >= 0.5) == truth).mean())
                if len(labelled)
                else None,
                "subscription_rate": float(truth.mean()) if len(labelled) else None,
                "note": None,
                "computed_at": LIVE_NOW,
            }
        )
    # A day before the range, which no panel shows.
    rows.append({**rows[0], "day": date(2026, 2, 20), "roc_auc": 0.9, "prediction_drift": 0.5})
    return rows


@dataclass(frozen=True)
class ServedTraffic:
    """A monitoring database after served traffic, and what was written to it."""

    database: str
    answers: list[dict[str, Any]]
    traffic: list[dict[str, Any]]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """``sql`` with Grafana's macros over LIVE_RANGE, in a session whose time zone is not
        UTC (as Grafana's may be): hours and days must be UTC's all the same."""
        connection = psycopg2.connect(
            **{**POSTGRES, "dbname": self.database}, options="-c TimeZone=Asia/Kolkata"
        )
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(expand_macros(sql, *LIVE_RANGE))
                assert [column.name for column in cursor.description][1] == "metric"
                return cursor.fetchall()
        finally:
            connection.close()


@pytest.fixture
def served_traffic(postgres_database: str) -> Iterator[ServedTraffic]:
    """Answers kept as the service keeps them, outcomes reported for every other request, and
    the daily served_traffic rows, in schema monitoring of a fresh database."""
    engine = store.connect(f"postgresql://postgres@127.0.0.1:5432/{postgres_database}")
    try:
        answers = served_answers()
        assert insert_served(engine, answers) == len(answers)
        rng = np.random.default_rng(11)
        for row in answers:
            if row["role"] == LIVE and int(row["request_id"].rsplit("-", 1)[1]) % 2 == 0:
                subscribed = bool(rng.uniform(0, 1) < row["probability"])
                record_outcome(engine, row["request_id"], subscribed, row["record"])
        traffic = served_traffic_rows(read_served(engine))
        with engine.begin() as connection:
            connection.execute(sa.insert(store.served_traffic), traffic)
        yield ServedTraffic(postgres_database, answers, traffic)
    finally:
        engine.dispose()


def in_range(moment: datetime) -> bool:
    """Grafana's $__timeFilter on a timestamp column: BETWEEN, both ends included."""
    return LIVE_RANGE[0] <= moment <= LIVE_RANGE[1]


def day_in_range(day: date) -> bool:
    """$__timeFilter on a DATE column: PostgreSQL casts the range's ends to their dates."""
    return LIVE_RANGE[0].date() <= day <= LIVE_RANGE[1].date()


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def expected_live_series(traffic: ServedTraffic) -> dict[tuple[str, str], dict[Any, float]]:
    """Each live SQL query's rows, computed here: (panel, refId) -> {(time, metric): value}."""
    live = [row for row in traffic.answers if row["role"] == LIVE and in_range(row["received_at"])]
    hourly: dict[Any, float] = {}
    for row in live:
        hour = row["received_at"].replace(minute=0, second=0, microsecond=0)
        key = (hour, f"version {row['model_version']}")
        hourly[key] = hourly.get(key, 0) + 1
    shadows = {
        (row["request_id"], row["record"]): row for row in traffic.answers if row["role"] == SHADOW
    }
    pairs: dict[tuple[datetime, str], list[tuple[float, float]]] = {}
    for row in live:
        shadow = shadows.get((row["request_id"], row["record"]))
        if shadow is not None:
            versions = f"challenger version {shadow['model_version']} against version 4"
            assert row["model_version"] == "4"
            key = (midnight(row["received_at"].date()), versions)
            pairs.setdefault(key, []).append((row["probability"], shadow["probability"]))
    agreement = {
        (day, f"agreement, {versions}"): float(
            np.mean([(p >= THRESHOLD) == (s >= THRESHOLD) for p, s in both])
        )
        for (day, versions), both in pairs.items()
    }
    difference = {
        (day, f"mean absolute difference, {versions}"): float(
            np.mean([abs(p - s) for p, s in both])
        )
        for (day, versions), both in pairs.items()
    }
    days = [row for row in traffic.traffic if day_in_range(row["day"])]

    def daily(column: str, prefix: str = "") -> dict[Any, float]:
        return {
            (midnight(row["day"]), f"{prefix}version {row['model_version']} {row['role']}"): row[
                column
            ]
            for row in days
            if row[column] is not None
        }

    return {
        ("Answered records per hour by model version", "A"): hourly,
        ("Shadow agreement by day", "A"): agreement,
        ("Shadow agreement by day", "B"): difference,
        ("Realized ROC AUC of served traffic by day", "A"): daily("roc_auc"),
        ("Drift of served traffic by day", "A"): daily("prediction_drift", "prediction drift, "),
        ("Drift of served traffic by day", "B"): daily("drifted_share", "drifted input share, "),
    }


@pytest.mark.integration
def test_each_live_sql_query_returns_the_served_traffic(served_traffic: ServedTraffic) -> None:
    expected = expected_live_series(served_traffic)
    queried = set()
    for panel, target in live_targets("grafana-postgresql-datasource"):
        key = (panel["title"], target["refId"])
        rows = served_traffic.query(target["rawSql"])
        times = [row[0] for row in rows]
        assert times == sorted(times), key  # Grafana needs time series sorted by time
        got = {(moment.astimezone(UTC), metric): float(value) for moment, metric, value in rows}
        assert len(got) == len(rows), key
        assert got == pytest.approx(expected[key]), key
        assert got, f"{key}: no rows"
        queried.add(key)
    assert queried == set(expected)
    # What the panels show: the rollover hour has a bar of each version; the challenger's
    # agreement is named; its realized ROC AUC in shadow is there once outcomes came back.
    hourly = expected[("Answered records per hour by model version", "A")]
    rollover_hour = ROLLOVER.replace(minute=0)
    assert {(rollover_hour, "version 4"), (rollover_hour, "version 5")} <= set(hourly)
    assert {metric for _, metric in expected[("Shadow agreement by day", "A")]} == {
        "agreement, challenger version 5 against version 4"
    }
    roc = expected[("Realized ROC AUC of served traffic by day", "A")]
    assert (midnight(SHADOW_FROM.date()), "version 5 shadow") in roc
    # Nothing from outside the range: the day before it, the hour after "now".
    assert all(moment >= midnight(LIVE_RANGE[0].date()) for moment, _ in roc)
