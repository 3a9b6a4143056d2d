"""The code location loads, with the assets, checks and jobs the design names."""

from __future__ import annotations

import dagster as dg
import yaml

from bank_marketing.orchestration.definitions import defs
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.settings import Settings
from bank_marketing_tests.conftest import REPO


def test_definitions_load() -> None:
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    families = ["logistic_regression", "random_forest", "xgboost", "svc", "mlp"]
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "raw_contacts",
        "contacts",
        "training_set",
        *(f"{family}_candidate" for family in families),
        "champion_model",
        "champion_evaluation",
        "production_deployment",
        "predictions",
        "drift_report",
        "served_traffic",
    }
    # What is live now is one state, not one per month.
    unpartitioned = {dg.AssetKey("raw_contacts"), dg.AssetKey("production_deployment")}
    for key in unpartitioned:
        assert graph.get(key).partitions_def is None, key
    # Live traffic comes by the UTC day, from the first day of the settings.
    daily = {dg.AssetKey("served_traffic")}
    assert graph.get(dg.AssetKey("served_traffic")).partitions_def == dg.DailyPartitionsDefinition(
        start_date=Settings.from_env().traffic.first_day, timezone="UTC"
    )
    assert (
        dg.AssetKey("champion_model") in graph.get(dg.AssetKey("production_deployment")).parent_keys
    )
    for key in graph.get_all_asset_keys() - unpartitioned - daily:
        assert graph.get(key).partitions_def == monthly_partitions, key
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {
        ("contacts", "valid_rows"),
        ("training_set", "trainable"),
        ("champion_model", "champion_is_sound"),
        ("predictions", "valid_predictions"),
        ("drift_report", "valid_drift_metrics"),
        ("served_traffic", "valid_served_traffic"),
    }
    assert all(graph.get(check).blocking for check in graph.asset_check_keys)
    assert {job.name for job in repository.get_all_jobs()} >= {
        "ingest_job",
        "contacts_job",
        "training_job",
        "evaluation_job",
        "deployment_job",
        "monitoring_job",
        "served_traffic_job",
    }
    assert {sensor.name for sensor in repository.sensor_defs} == {
        "validate_landed_files",
        "score_new_months",
        "retrain_on_drift",
        "retrain_on_grafana_alert",
        "deploy_new_champion",
        "restore_live_version",
    }
    # The daemon runs it like the sensors: on by default.
    [schedule] = repository.schedule_defs
    assert schedule.name == "served_traffic_daily" and schedule.job_name == "served_traffic_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_thirty_one_monthly_partitions() -> None:
    keys = monthly_partitions.get_partition_keys()
    assert len(keys) == 31
    assert keys[0] == "2008-05-01" and keys[-1] == "2010-11-01"
    assert "2008-09-01" in keys


def test_the_stacks_run_queue_runs_one_training_round_at_a_time() -> None:
    # Two rounds promoting at once would compare with the same champion; dagster.yaml limits
    # training runs by a tag that training_job must carry.
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    job_tags = defs.resolve_job_def("training_job").tags
    training = [
        limit
        for limit in limits
        if limit["key"] in job_tags and limit.get("value") == job_tags[limit["key"]]
    ]
    assert [limit["limit"] for limit in training] == [1]
    for other in ("monitoring_job", "contacts_job", "deployment_job"):
        assert not any(
            defs.resolve_job_def(other).tags.get(limit["key"]) == limit["value"]
            for limit in training
        )


def test_the_embedded_instance_queues_runs_with_the_stacks_limits(tmp_path) -> None:
    """The daemon launches the loop's runs on the embedded instance too (make dev, make live)."""
    settings = Settings.from_env({"BANK_MARKETING_HOME": str(tmp_path / "home")})
    settings.prepare()
    embedded = yaml.safe_load((settings.dagster_home / "dagster.yaml").read_text())
    stack = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert embedded["concurrency"] == stack["concurrency"]
    # A queued run waits at most a second for the daemon on the embedded instance.
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
    for job, value in (("training_job", "training"), ("deployment_job", "deployment")):
        assert defs.resolve_job_def(job).tags["bank_marketing/job"] == value


def test_a_dead_run_is_settled_after_30_min_except_a_training_round() -> None:
    """Run monitoring fails a run past its dagster/max_runtime (the instance's default, 2 h,
    is for training rounds)."""
    for job in defs.get_repository_def().get_all_jobs():
        if job.name.startswith("__"):
            continue
        expected = None if job.name == "training_job" else "1800"
        assert job.tags.get("dagster/max_runtime") == expected, job.name


def test_every_job_says_what_started_its_runs() -> None:
    for job in defs.get_repository_def().get_all_jobs():
        if not job.name.startswith("__"):
            assert job.tags.get("bank_marketing/trigger") == "by hand", job.name


def test_the_dagster_configs_are_the_training_defaults() -> None:
    """Each Dagster config wraps its plain model in training/: same fields, same defaults, and
    the same descriptions in the run configuration schema the UI shows."""
    from bank_marketing.orchestration.assets.training import (
        CANDIDATE_CONFIGS,
        ChampionConfig,
        TrainingSetConfig,
    )
    from bank_marketing.orchestration.resources import ModelInputs
    from bank_marketing.training import config

    pairs = [
        (TrainingSetConfig, config.WindowSplit),
        (ChampionConfig, config.PromotionRule),
        (ModelInputs, config.Inputs),
    ]
    assert CANDIDATE_CONFIGS.keys() == config.FAMILY_PARAMS.keys()
    pairs += [
        (CANDIDATE_CONFIGS[family], config.FAMILY_PARAMS[family]) for family in CANDIDATE_CONFIGS
    ]
    for wrapper, plain in pairs:
        assert issubclass(wrapper, plain), wrapper
        assert wrapper().model_dump() == plain().model_dump(), wrapper
        fields = wrapper.to_config_schema().as_field().config_type.fields
        for name, field in plain.model_fields.items():
            assert fields[name].description == field.description, (wrapper, name)
