"""Grafana as code: the generated dashboard is current and draws the retraining policy's default
thresholds; the provisioning parses, reads only the stack's four datasources and commits no
secret; after a short replay on PostgreSQL every panel's SQL and the alert rules' queries return
what the panels and rules expect; an alert of a provisioned rule, posted as Grafana posts it,
leads to exactly one retrain."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bank_marketing.monitoring.policy import RetrainRule
from bank_marketing.orchestration.resources import MonitoringDatabase
from bank_marketing.orchestration.runner import failure_message, run_training
from bank_marketing.orchestration.sensors import (
    TRIGGER_TAG,
    RetrainPolicy,
    retrain_on_grafana_alert,
)
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


def sql_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel.get("targets")]


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
    assert [panel["type"] for panel in panels if not panel.get("targets")] == ["alertlist"]
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
