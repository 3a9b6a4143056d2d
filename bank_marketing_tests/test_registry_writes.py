"""The promotion's registry calls when the registry's database goes away for a moment or for
good: tried again while MLflow says it is temporarily unavailable, and never a challenger whose
tags claim a promotion the alias does not show, nor a champion judged unscorable for a moment's
outage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bank_marketing.training import registry, retries
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing.training.tracking import MODEL_NAME
from bank_marketing_tests.registries import first_contacts, log_round


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, bank_full_path: Path) -> str:
    """A SQLite registry with versions 1 (the champion) and 2 of one small model."""
    folder = tmp_path_factory.mktemp("registry-writes")
    frame = first_contacts(bank_full_path, folder, 3000)
    train, validation = frame.iloc[:2000], frame.iloc[2000:]
    params = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}
    fitted = fit_candidate("logistic_regression", params, DEFAULT_INPUTS, train, validation)
    uri, records = log_round(folder, [(fitted, params), (fitted, params)], train, validation)
    assert [record.model_version for record in records] == ["1", "2"]
    return uri


ALIAS_WRITE = r"\s*(INSERT INTO|UPDATE) registered_model_aliases\b"
VERSION_READ = r"\s*SELECT\b.*\bFROM model_versions\b"


@contextmanager
def failing(statement: str, times: int | None) -> Iterator[list[str]]:
    """The next ``times`` statements matching ``statement`` (None: all of them) fail as they do
    when the database goes away; yields those that failed."""
    failed: list[str] = []

    def fail(conn, cursor, sql, parameters, context, executemany) -> None:
        if re.match(statement, sql, re.DOTALL) and (times is None or len(failed) < times):
            failed.append(sql)
            raise sa.exc.OperationalError(sql, parameters, Exception("server closed"))

    sa.event.listen(sa.Engine, "before_cursor_execute", fail)
    try:
        yield failed
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", fail)


def _promotion(client: MlflowClient) -> registry.Decision:
    return registry.decide(
        challenger_version="2",
        challenger_roc_auc=0.75,
        challenger_problem=None,
        champion_version=registry.require_champion(client),
        champion_roc_auc=0.5,
        champion_problem=None,
        margin=0.0,
        floor=0.5,
    )


def _reset(client: MlflowClient) -> None:
    client.set_registered_model_alias(MODEL_NAME, registry.CHAMPION_ALIAS, "1")
    for key in _promotion(client).as_tags():
        client.delete_model_version_tag(MODEL_NAME, "2", key)


def test_a_moment_without_the_database_is_waited_out(two_versions: str) -> None:
    client = MlflowClient(two_versions)
    _reset(client)
    with failing(ALIAS_WRITE, times=2) as failed:
        registry.apply(client, _promotion(client))
    assert len(failed) == 2
    assert registry.require_champion(client) == "2"
    assert client.get_model_version(MODEL_NAME, "2").tags["promotion_promoted"] == "True"


def test_a_database_that_stays_away_fails_the_promotion_without_claiming_it(
    two_versions: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(two_versions)
    _reset(client)
    monkeypatch.setattr(retries, "RETRY_SECONDS", 1.0)
    with failing(ALIAS_WRITE, times=None) as failed, pytest.raises(MlflowException) as raised:
        registry.apply(client, _promotion(client))
    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert len(failed) >= 2
    assert registry.require_champion(client) == "1"
    tags = client.get_model_version(MODEL_NAME, "2").tags
    assert tags["promotion_reason"].startswith("challenger v2 ROC AUC 0.7500 beats champion v1")
    assert "promotion_promoted" not in tags


def test_a_version_is_scored_once_the_database_answers_again(
    two_versions: str, bank_full_path: Path, tmp_path: Path
) -> None:
    validation = first_contacts(bank_full_path, tmp_path, 3000).iloc[2000:]
    with failing(VERSION_READ, times=1) as failed:
        evaluation = registry.evaluate_version(MlflowClient(two_versions), "1", validation)
    assert len(failed) == 1
    assert evaluation.problem is None and evaluation.roc_auc is not None
    assert 0.5 < evaluation.roc_auc <= 1
