"""Secrets: tokens compared in constant time, the history scanned for leaked secrets, and the
locked dependencies audited for known vulnerabilities (RELIABILITY.md, "Secrets")."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import secrets
import string
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi.security import HTTPAuthorizationCredentials

from bank_marketing.serving.http import bearer_refusal
from bank_marketing.settings import Settings
from bank_marketing_tests.conftest import REPO, free_port

VARIABLE = "BANK_MARKETING_WEBHOOK_TOKEN"
TOKEN = "tést-tøken-✓-41"  # non-ASCII on purpose: compare_digest refuses non-ASCII str


def _bearer(value: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=value)


def test_the_exact_token_is_accepted() -> None:
    assert bearer_refusal(TOKEN, _bearer(TOKEN), VARIABLE) is None
    assert bearer_refusal("ascii-token", _bearer("ascii-token"), VARIABLE) is None


@pytest.mark.parametrize(
    "sent",
    [
        "",
        TOKEN[:-1],  # a prefix
        TOKEN + "x",  # longer
        TOKEN.upper(),
        TOKEN.encode().decode("latin-1"),  # the same bytes read as another text
        "tést-tøken-✓-42",  # same length, last character differs
        "x" * 10_000,
        "\x00" * len(TOKEN),
        "ascii-only-token",
    ],
)
def test_anything_else_is_401_without_raising(sent: str) -> None:
    refusal = bearer_refusal(TOKEN, _bearer(sent), VARIABLE)
    assert refusal is not None and refusal.status_code == 401
    assert json.loads(refusal.body)["detail"].startswith("wrong bearer token")


def test_a_non_ascii_credential_against_an_ascii_token_is_401_without_raising() -> None:
    refusal = bearer_refusal("ascii-token", _bearer("äscii-token"), VARIABLE)
    assert refusal is not None and refusal.status_code == 401


def test_no_credential_or_no_token_is_401() -> None:
    missing = bearer_refusal(TOKEN, None, VARIABLE)
    assert missing is not None and missing.status_code == 401
    assert json.loads(missing.body)["detail"].startswith("missing bearer token")
    for unset in (None, ""):
        refusal = bearer_refusal(unset, _bearer(""), VARIABLE)
        assert refusal is not None and refusal.status_code == 401
        assert f"{VARIABLE} is not set" in json.loads(refusal.body)["detail"]


def test_the_token_can_come_from_a_file_as_docker_secrets_do(tmp_path: Path) -> None:
    token_file = tmp_path / "webhook_token"
    token_file.write_text("from-a-file\n")
    home = {"BANK_MARKETING_HOME": str(tmp_path / "home")}
    settings = Settings.from_env({**home, f"{VARIABLE}_FILE": str(token_file)})
    assert settings.webhook_token == "from-a-file"
    # The file wins: a replica handed one may have inherited an older value of the variable.
    both = {**home, VARIABLE: "inherited", f"{VARIABLE}_FILE": str(token_file)}
    assert Settings.from_env(both).webhook_token == "from-a-file"
    assert Settings.from_env({**home, VARIABLE: "plain"}).webhook_token == "plain"
    assert Settings.from_env(home).webhook_token is None


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_a_token_file_that_is_missing_or_empty_is_a_clear_error(
    tmp_path: Path, content: str | None
) -> None:
    token_file = tmp_path / "webhook_token"
    if content is not None:
        token_file.write_text(content)
    env = {"BANK_MARKETING_HOME": str(tmp_path), f"{VARIABLE}_FILE": str(token_file)}
    problem = "is empty" if content is not None else "cannot read .*No such file"
    named = re.escape(repr(str(token_file)))
    with pytest.raises(ValueError, match=rf"^{VARIABLE}_FILE={named}: .*{problem}"):
        Settings.from_env(env)


SECRET_WORDS = ("token", "secret", "password", "credential")


def _secret_operand(node: ast.expr) -> str | None:
    """The name of an operand that holds a secret value (not a constant naming one)."""
    name = None
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        # token.encode(), credentials.strip() ...
        return _secret_operand(node.func.value)
    if name is None or name.isupper():
        return None
    return name if any(word in name.lower() for word in SECRET_WORDS) else None


def test_no_secret_is_compared_with_a_plain_equality() -> None:
    """``==``, ``!=`` and ``in`` stop at the first differing character, so their time tells an
    attacker how much of a guess was right: secrets go through ``secrets.compare_digest``."""
    offenders = []
    for path in sorted((REPO / "bank_marketing").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value is None for o in operands):
                continue
            names = [name for o in operands if (name := _secret_operand(o))]
            if names:
                where = path.relative_to(REPO)
                offenders.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "secrets compared with ==/!=/in:\n" + "\n".join(offenders)


def test_the_check_above_catches_a_plain_comparison() -> None:
    source = "def check(sent, token):\n    return sent == token\n"
    (node,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Compare)]
    assert _secret_operand(node.comparators[0]) == "token"
    assert _secret_operand(ast.parse("ENV_WEBHOOK_TOKEN", mode="eval").body) is None


AUDIT = REPO / "security" / "audit_dependencies.py"


def _audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AUDIT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_audit_passes_and_says_so_when_pypi_cannot_be_reached(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("requests==2.19.1\n")
    # Every request goes through a proxy on a port where nothing listens: PyPI out of reach.
    proxy = f"http://127.0.0.1:{free_port()}"
    unreachable = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy}
    unreachable |= {"http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    done = _audit("--requirement", str(requirements), "--timeout", "5", env=unreachable)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PyPI's vulnerability service cannot be reached" in done.stdout
    assert f"{requirements} was NOT audited" in done.stdout


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# pip-audit's JSON report, as it writes it for one vulnerable release and one it could not look up.
VULN = {
    "id": "PYSEC-2018-28",
    "fix_versions": ["2.20.0"],
    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
    "description": "The Requests package sends an HTTP Authorization header to an http URI ...",
}
REPORT = {
    "dependencies": [
        {"name": "requests", "version": "2.19.1", "vulns": [VULN]},
        {"name": "idna", "version": "3.10", "vulns": []},
        {"name": "private-tool", "skip_reason": "Dependency not found on PyPI"},
    ],
    "fixes": [],
}


def test_a_known_vulnerability_fails_the_audit_unless_ignored_with_a_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    audit = _load(AUDIT)
    assert audit.judge(REPORT, {}, "uv.lock") == 1
    out = capsys.readouterr().out
    assert (
        "VULNERABLE requests 2.19.1: PYSEC-2018-28 (CVE-2018-18074, GHSA-x84v-xcm2-53pg); " in out
    )
    assert "fixed in: 2.20.0" in out
    # What could not be looked up is named, not counted as clean.
    assert "NOT AUDITED private-tool: Dependency not found on PyPI" in out
    assert "2 of 3 packages audited, 1 known vulnerabilities (0 ignored with a reason)" in out

    assert audit.judge(REPORT, {"PYSEC-2018-28": "not reachable here"}, "uv.lock") == 0
    out = capsys.readouterr().out
    assert "ignored   requests 2.19.1: PYSEC-2018-28" in out and "why: not reachable here" in out
    stale = {"PYSEC-2018-28": "reviewed", "GHSA-gone": "fixed since"}
    assert audit.judge(REPORT, stale, "uv.lock") == 0
    assert "note: GHSA-gone is on the ignore list but no longer reported" in capsys.readouterr().out


def test_no_release_data_at_all_is_said_to_be_no_audit(capsys: pytest.CaptureFixture[str]) -> None:
    """A proxy in front of PyPI may answer everything but the per-release JSON pip-audit reads:
    every package skipped is no audit, said so, rather than a clean one."""
    audit = _load(AUDIT)
    skipped = {"dependencies": [d for d in REPORT["dependencies"] if "skip_reason" in d]}
    assert audit.judge(skipped, {}, "uv.lock") == 0
    out = capsys.readouterr().out
    assert "PyPI's vulnerability service cannot be reached" in out
    assert "uv.lock was NOT audited" in out


def test_an_ignore_entry_without_a_reason_stops_the_audit(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("requests==2.19.1\n")
    reasonless = tmp_path / "reasonless.toml"
    reasonless.write_text('[[ignore]]\nid = "PYSEC-2018-28"\n')
    done = _audit("--requirement", str(requirements), "--ignore-file", str(reasonless))
    assert done.returncode == 2
    assert "ignore entry 1 needs both an id and a reason" in done.stderr


def test_a_vulnerable_release_fails_the_real_audit(tmp_path: Path) -> None:
    """End to end on PyPI's data, where PyPI serves it (the machines' proxy does not)."""
    try:
        release = httpx.get("https://pypi.org/pypi/requests/2.19.1/json", timeout=10)
    except httpx.HTTPError as error:
        pytest.skip(f"PyPI cannot be reached ({error})")
    if release.status_code != 200:
        pytest.skip(f"PyPI answers {release.status_code} for a release's JSON")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("requests==2.19.1\n")
    empty = tmp_path / "ignore.toml"
    empty.write_text("")
    done = _audit("--requirement", str(requirements), "--ignore-file", str(empty))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VULNERABLE requests 2.19.1: " in done.stdout


SCAN = REPO / "security" / "scan_secrets.py"


def _scan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCAN), *args], capture_output=True, text=True, timeout=300, check=False
    )


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _fake_aws_key() -> str:
    """An AWS-style key pair, made up here so that no such literal is ever in this repository."""
    key_id = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
    return f'AWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secret}"\n'


def _fake_private_key() -> str:
    marker = "RSA " + "PRIVATE KEY"  # split, so this file holds no key header
    body = "\n".join(
        secrets.token_urlsafe(48).replace("-", "+").replace("_", "/") for _ in range(12)
    )
    return f"-----BEGIN {marker}-----\n{body}\n-----END {marker}-----\n"


@pytest.fixture
def leaky_repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose second commit added secrets and whose third removed them again."""
    repo = tmp_path / "leaky"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--initial-branch", "main")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "user.name", "A Developer")
    (repo / "README.md").write_text("a project\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "start")
    (repo / "settings.py").write_text(_fake_aws_key())
    (repo / "deploy").mkdir()
    (repo / "deploy" / "server.pem").write_text(_fake_private_key())
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "deployment settings")
    leaked = _git(repo, "rev-parse", "HEAD")
    _git(repo, "rm", "--quiet", "settings.py", "deploy/server.pem")
    _git(repo, "commit", "--quiet", "-m", "keep the settings out of git")
    assert _git(repo, "ls-files") == "README.md"
    return repo, leaked


def test_a_secret_deleted_from_the_tree_is_still_caught_in_its_commit(
    leaky_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, leaked = leaky_repo
    empty = tmp_path / "allow.toml"
    empty.write_text("")
    done = _scan("--repo", str(repo), "--allowlist", str(empty))
    assert done.returncode == 1, done.stdout + done.stderr
    reported = [line for line in done.stdout.splitlines() if line.startswith("SECRET")]
    assert any(f"commit {leaked}: settings.py:" in line and "aws" in line for line in reported), (
        done.stdout
    )
    assert any(
        f"commit {leaked}: deploy/server.pem:" in line and "private-key" in line
        for line in reported
    ), done.stdout
    # The secret itself is not repeated in the log.
    assert "AKIA" not in done.stdout
    assert "3 commits" in done.stdout


def test_the_allowlist_accepts_a_reviewed_finding_only_with_a_reason(
    leaky_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, _ = leaky_repo
    allow = tmp_path / "allow.toml"
    allow.write_text(
        '[[allow]]\nrule = "betterleaks.private-key"\npath = "deploy/*.pem"\n'
        'reason = "test: a made-up key"\n'
    )
    done = _scan("--repo", str(repo), "--allowlist", str(allow))
    assert done.returncode == 1, done.stdout + done.stderr
    reported = [line for line in done.stdout.splitlines() if line.startswith("SECRET")]
    assert len(reported) == 1 and "settings.py" in reported[0]
    assert "(1 allowed)" in done.stdout

    allow.write_text('[[allow]]\nrule = "betterleaks.private-key"\npath = "deploy/*.pem"\n')
    done = _scan("--repo", str(repo), "--allowlist", str(allow))
    assert done.returncode == 2
    assert "allow entry 1 lacks reason" in done.stderr


def test_the_projects_own_history_has_no_secret() -> None:
    done = _scan()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note:" not in done.stdout, "stale allowlist entries: " + done.stdout
