"""production_deployment: telling a running Ray Serve application which version to serve."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml
from mlflow import MlflowClient

from bank_marketing.orchestration.assets.deployment import production_deployment
from bank_marketing.orchestration.definitions import build_definitions, deployment_job
from bank_marketing.orchestration.resources import ServingCluster
from bank_marketing.orchestration.runner import failure_message, run_deployment
from bank_marketing.serving.contract import EXAMPLE_RECORD
from bank_marketing.serving.rollout import APP_NAME, SERVE_CONFIG, RolloutError, ServeCluster
from bank_marketing.settings import Settings
from bank_marketing.training.registry import CHAMPION_ALIAS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.conftest import RayCluster
from bank_marketing_tests.registries import register_two_versions
from bank_marketing_tests.test_webhook import NOTIFICATION

APP = "bank-marketing-rollout"


def _cluster(tmp_path: Path, config: dict[str, Any] | None = None) -> ServeCluster:
    path = SERVE_CONFIG
    if config is not None:
        path = tmp_path / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
    dashboard, service = "http://127.0.0.1:1", "http://127.0.0.1:8100/api"
    return ServeCluster(
        dashboard,
        service,
        "sqlite:////r/mlflow.db",
        config_path=path,
        environment={"BANK_MARKETING_DB_URL": "sqlite:////r/monitoring.db"},
    )


def test_the_config_serves_the_version_at_the_service_url_and_keeps_other_apps(tmp_path):
    other = {"name": "fraud", "route_prefix": "/fraud", "import_path": "fraud.app:app"}
    current = {
        "applications": {
            "fraud": {"deployed_app_config": other},
            "bank-marketing": {"deployed_app_config": {"name": "bank-marketing"}},
            "notebook": {"deployed_app_config": None},  # deployed with serve.run: left alone
        }
    }
    config = _cluster(tmp_path).deploy_config("7", current)

    assert config["http_options"]["port"] == 8100
    assert [app["name"] for app in config["applications"]] == ["fraud", "bank-marketing"]
    assert config["applications"][0] == other
    ours = config["applications"][1]
    assert ours["route_prefix"] == "/api"
    assert ours["args"]["tracking_uri"] == "sqlite:////r/mlflow.db"
    env_vars = ours["runtime_env"]["env_vars"]
    assert env_vars["MLFLOW_TRACKING_URI"] == "sqlite:////r/mlflow.db"
    assert env_vars["BANK_MARKETING_DB_URL"] == "sqlite:////r/monitoring.db"
    (deployment,) = ours["deployments"]
    assert deployment["user_config"] == {"model_version": "7"}
    # Everything else comes from the file users deploy with `serve deploy`.
    file_app = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]
    assert deployment["autoscaling_config"] == file_app["deployments"][0]["autoscaling_config"]
    assert ours["import_path"] == file_app["import_path"]


def test_a_broken_serve_config_is_refused_before_anything_is_sent(tmp_path):
    broken = yaml.safe_load(SERVE_CONFIG.read_text())
    broken["applications"][0]["deployments"][0]["max_ongoing_requests"] = "many"
    with pytest.raises(RolloutError, match="invalid"):
        _cluster(tmp_path, broken).deploy_config("7", {})
    two_apps = yaml.safe_load(SERVE_CONFIG.read_text())
    two_apps["applications"].append(dict(two_apps["applications"][0], name="other"))
    with pytest.raises(RolloutError, match="exactly one application"):
        _cluster(tmp_path, two_apps).deploy_config("7", {})


# Fake secrets: plain words that no rule of the secret scan (make scan-secrets) reports.
WEBHOOK_TOKEN = "rollout-webhook-token-7f3a9c"
DB_PASSWORD = "rollout-db-password-51be"
TRACKING_PASSWORD = "rollout-mlflow-password-c20d"


def _secret_cluster(tmp_path: Path, dashboard: str, token: str = WEBHOOK_TOKEN) -> ServeCluster:
    return ServeCluster(
        dashboard,
        "http://127.0.0.1:8100",
        f"https://mlflow:{TRACKING_PASSWORD}@mlflow.example:5000",
        environment={
            "BANK_MARKETING_WEBHOOK_TOKEN": token,
            "BANK_MARKETING_DB_URL": f"postgresql://monitor:{DB_PASSWORD}@db.example/monitoring",
            "BANK_MARKETING_SERVED_QUEUE": "500",
        },
        secrets_dir=tmp_path / "secrets",
    )


def test_secrets_reach_a_local_cluster_as_private_files_never_in_the_config(tmp_path):
    cluster = _secret_cluster(tmp_path, "http://127.0.0.1:1")
    config = cluster.deploy_config("7", {})

    shown = json.dumps(config)
    for secret in (WEBHOOK_TOKEN, DB_PASSWORD, TRACKING_PASSWORD):
        assert secret not in shown
    (ours,) = config["applications"]
    assert "tracking_uri" not in ours["args"]
    env_vars = ours["runtime_env"]["env_vars"]
    assert env_vars["BANK_MARKETING_SERVED_QUEUE"] == "500"
    assert not {
        "BANK_MARKETING_WEBHOOK_TOKEN",
        "BANK_MARKETING_DB_URL",
        "MLFLOW_TRACKING_URI",
    } & set(env_vars)
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("BANK_MARKETING_WEBHOOK_TOKEN", "BANK_MARKETING_DB_URL", "MLFLOW_TRACKING_URI"):
        path = Path(env_vars[f"{name}_FILE"])
        assert path.parent == folder
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # What a replica reads: the settings resolve each secret from its file.
    replica = Settings.from_env({"BANK_MARKETING_HOME": str(tmp_path / "replica"), **env_vars})
    assert replica.webhook_token == WEBHOOK_TOKEN
    assert replica.db_url == f"postgresql://monitor:{DB_PASSWORD}@db.example/monitoring"
    assert replica.mlflow_tracking_uri == cluster.tracking_uri

    # The same secrets again: the same files, so the config is unchanged and Serve reconfigures
    # the replicas rather than replacing them.
    assert cluster.deploy_config("7", {}) == config
    # A rotated token: a new file, so the next rollover restarts the replicas on it.
    rotated = _secret_cluster(tmp_path, "http://127.0.0.1:1", token="rotated-token-0b9e")
    rotated_env = rotated.deploy_config("7", {})["applications"][0]["runtime_env"]["env_vars"]
    new_file = rotated_env["BANK_MARKETING_WEBHOOK_TOKEN_FILE"]
    assert new_file != env_vars["BANK_MARKETING_WEBHOOK_TOKEN_FILE"]
    assert Path(new_file).read_text() == "rotated-token-0b9e"


def test_a_remote_cluster_gets_no_secret_at_all(tmp_path):
    config = _secret_cluster(tmp_path, "http://192.0.2.1:8265").deploy_config("7", {})

    shown = json.dumps(config)
    for secret in (WEBHOOK_TOKEN, DB_PASSWORD, TRACKING_PASSWORD):
        assert secret not in shown
    assert "_FILE" not in shown
    env_vars = config["applications"][0]["runtime_env"]["env_vars"]
    assert env_vars["BANK_MARKETING_SERVED_QUEUE"] == "500"
    assert not (tmp_path / "secrets").exists()


def test_a_serve_config_file_holding_a_secret_is_refused(tmp_path):
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["applications"][0]["runtime_env"]["env_vars"]["BANK_MARKETING_WEBHOOK_TOKEN"] = "x"
    with pytest.raises(RolloutError, match=r"runtime_env\.env_vars\.BANK_MARKETING_WEBHOOK_TOKEN"):
        _cluster(tmp_path, config).deploy_config("7", {})


def test_no_cluster_and_no_local_start_is_a_clear_error(tmp_path, bank_full_path):
    settings = Settings.from_env(
        {
            "BANK_MARKETING_HOME": str(tmp_path / "home"),
            "BANK_MARKETING_SOURCE": str(bank_full_path),
            "RAY_DASHBOARD_ADDRESS": "http://192.0.2.1:8265",
        }
    )
    serving = build_definitions(settings).resources["serving"]
    with pytest.raises(RolloutError, match=r"no Ray dashboard answers at http://192\.0\.2\.1"):
        serving.roll_over("1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> dict[str, Any]:
    return register_two_versions(tmp_path_factory.mktemp("rollout-registry"), bank_full_path)


@pytest.mark.integration
def test_production_deployment_rolls_the_service_over_without_failed_requests(
    tmp_path: Path, registry: dict[str, Any], ray_cluster: RayCluster, bank_full_path: Path
) -> None:
    from ray import serve

    first, second = registry["versions"]
    serve_url = f"{ray_cluster.http_url}/rollout"
    serving = ServingCluster(
        dashboard_url=ray_cluster.dashboard_url,
        serve_url=serve_url,
        tracking_uri=registry["uri"],
        start_local=False,
        app_name=APP,
    )
    defs = dg.Definitions(
        assets=[production_deployment], jobs=[deployment_job], resources={"serving": serving}
    )
    try:
        with dg.instance_for_test() as instance:
            # The first deployment follows the champion alias.
            result = run_deployment(defs, instance)
            assert result.success, failure_message(result)
            live = _metadata(result)
            assert live["live_version"] == first
            assert live["serve_url"] == serve_url
            assert live["running_replicas"] == 2
            assert live["serve_application"] == APP and APP in serve.status().applications
            assert httpx.get(f"{serve_url}/model", timeout=10).json()["version"] == first

            # A pinned version under a steady stream of requests: none fails.
            outcomes = _stream_during(lambda: run_deployment(defs, instance, second), serve_url)
            result = outcomes.pop("result")
            assert result.success, failure_message(result)
            live = _metadata(result)
            assert (live["live_version"], live["previous_version"]) == (second, first)
            answers = outcomes["answers"]
            assert answers and all(status == 200 for status, _ in answers), [
                a for a in answers if a[0] != 200
            ][:5]
            assert answers[0][1] == first and answers[-1][1] == second

            # The first version back, with the second scored beside it in shadow.
            result = run_deployment(defs, instance, first, shadow_version=second)
            assert result.success, failure_message(result)
            live = _metadata(result)
            assert (live["live_version"], live["shadow_version"]) == (first, second)
            model = httpx.get(f"{serve_url}/model", timeout=10).json()
            assert (model["version"], model["shadow_version"]) == (first, second)
            response = httpx.post(f"{serve_url}/predict", json=EXAMPLE_RECORD, timeout=10)
            assert response.json()["model_version"] == first

            # A version that is not registered fails the materialization; the service stays.
            result = run_deployment(defs, instance, "999")
            assert not result.success
            assert "v999 is not in the registry" in failure_message(result)
            assert httpx.get(f"{serve_url}/model", timeout=10).json()["version"] == first
            records = instance.fetch_materializations(
                dg.AssetKey("production_deployment"), limit=10
            ).records
            assert len(records) == 3
    finally:
        serve.delete(APP)


@pytest.mark.integration
def test_the_deployed_config_holds_no_secret_and_the_token_still_authenticates(
    tmp_path: Path,
    registry: dict[str, Any],
    ray_cluster: RayCluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray import serve

    app = "bank-marketing-secrets"
    serve_url = f"{ray_cluster.http_url}/secrets"
    # The machine's PostgreSQL trusts local connections, so the password is sent but not needed.
    db_url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/{postgres_database}"
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    serving = ServingCluster(
        dashboard_url=ray_cluster.dashboard_url,
        serve_url=serve_url,
        tracking_uri=registry["uri"],
        start_local=False,
        app_name=app,
        monitoring_db_url=db_url,
        webhook_token=WEBHOOK_TOKEN,
    )
    first = registry["versions"][0]
    try:
        assert serving.roll_over(first).version == first

        # What anyone who reaches the dashboard sees: Serve's REST API, as `serve status` reads it.
        cluster = serving.cluster()
        response = httpx.get(
            f"{ray_cluster.dashboard_url}/api/serve/applications/",
            headers=cluster.headers,
            timeout=30,
        )
        assert response.status_code == 200
        assert WEBHOOK_TOKEN not in response.text
        assert DB_PASSWORD not in response.text
        deployed = response.json()["applications"][app]["deployed_app_config"]
        env_vars = deployed["runtime_env"]["env_vars"]
        token_file = Path(env_vars["BANK_MARKETING_WEBHOOK_TOKEN_FILE"])
        assert token_file.is_relative_to(tmp_path / "home" / "secrets")
        assert "BANK_MARKETING_DB_URL_FILE" in env_vars

        # The replicas read both from their files: the token authenticates, the database answers.
        bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        webhook = f"{serve_url}/webhooks/grafana"
        assert httpx.post(webhook, json=NOTIFICATION, timeout=30).status_code == 401
        wrong = {"Authorization": "Bearer rollout-webhook-token-7f3a9d"}
        assert httpx.post(webhook, json=NOTIFICATION, headers=wrong, timeout=30).status_code == 401
        stored = httpx.post(webhook, json=NOTIFICATION, headers=bearer, timeout=30)
        assert stored.status_code == 202, stored.text
        assert stored.json()["received"] == len(NOTIFICATION["alerts"])
        outcome = {"request_id": "never-answered", "subscribed": True}
        feedback = f"{serve_url}/feedback"
        assert httpx.post(feedback, json=outcome, timeout=30).status_code == 401
        unknown = httpx.post(feedback, json=outcome, headers=bearer, timeout=30)
        assert unknown.status_code == 404, unknown.text
    finally:
        serve.delete(app)


def _stream_during(action: Any, url: str) -> dict[str, Any]:
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{url}/predict", json=EXAMPLE_RECORD)
                    answers.append((response.status_code, response.json().get("model_version")))
                except httpx.HTTPError as error:
                    answers.append((0, str(error)))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        result = action()
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return {"result": result, "answers": answers}


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node("production_deployment")
    return {key: value.value for key, value in event.metadata.items()}


@pytest.mark.integration
def test_the_deploy_command_serves_the_champion_and_scores_an_example(
    tmp_path: Path,
    registry: dict[str, Any],
    ray_cluster: RayCluster,
    bank_full_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ray import serve

    from bank_marketing.cli import main

    serve_url = f"{ray_cluster.http_url}/command"
    for name, value in {
        "BANK_MARKETING_HOME": str(tmp_path / "home"),
        "BANK_MARKETING_SOURCE": str(bank_full_path),
        "MLFLOW_TRACKING_URI": registry["uri"],
        "RAY_DASHBOARD_ADDRESS": ray_cluster.dashboard_url,
        "BANK_MARKETING_SERVE_URL": serve_url,
    }.items():
        monkeypatch.setenv(name, value)
    champion = MlflowClient(registry["uri"]).get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    try:
        assert main(["deploy"]) == 0
    finally:
        serve.delete(APP_NAME)
    out = capsys.readouterr().out
    assert f"serving v{champion.version} " in out
    answer = json.loads(out.split(f"answer from POST {serve_url}/predict: ")[1])
    assert answer["model_version"] == str(champion.version)
    (prediction,) = answer["predictions"]
    assert 0.0 <= prediction["probability"] <= 1.0
