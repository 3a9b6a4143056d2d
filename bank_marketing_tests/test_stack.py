"""The docker compose stack (docker/): its files as written, and each service's command run here.

No Docker engine runs here. The unit tests lint the Dockerfile (hadolint), validate the compose
file against the Compose Specification's JSON schema, parse every command it runs with the
installed command-line tools, and check that no secret is committed. The integration tests read
each service's command, environment and healthcheck from docker/compose.yaml, point the service
names at this machine (postgres at 127.0.0.1:5432 with uniquely named databases and roles, mlflow
and the Dagster webserver on free ports, serving on the session's Ray) and run them: the init
script, `mlflow server`, the Dagster webserver and daemon, and Serve's commands.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import jsonschema
import psycopg2
import pytest
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient

from bank_marketing.data.months import recover_months
from bank_marketing.data.source import load_contacts
from bank_marketing.training.candidates import fit_candidate
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing_tests.conftest import POSTGRES, REPO, RayCluster, free_port, skip_or_fail
from bank_marketing_tests.registries import log_round

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
COMPOSE_SCHEMA = DOCKER / "schema" / "compose-spec.json"
INIT_SCRIPTS = sorted((DOCKER / "postgres" / "init").glob("*.sh"))
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "bank-marketing.yaml"
VENV_BIN = Path(sys.executable).parent
SECRET = re.compile(r"PASSWORD|TOKEN|SECRET")
# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
SERVICES = {
    "postgres",
    "mlflow",
    "serving",
    "dagster-webserver",
    "dagster-daemon",
    "bootstrap",
    "migrate",
    "prometheus",
    "grafana",
}
# Services that run once and exit: no healthcheck, never restarted.
ONE_SHOT = {"bootstrap", "migrate"}


# -- reading the compose file as docker compose does ----------------------------------------------


class MissingVariable(ValueError):
    """A required variable (``${NAME:?message}``) is unset or empty."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with compose's variable syntax replaced, in every string of a loaded YAML tree."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        current, op = env.get(name), match["op"]
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return match["arg"] if unset else str(current)
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {match['arg']}")
        return current or ""

    return VARIABLE.sub(replace, value)


def strings_of(value: Any) -> Iterator[str]:
    """Every string of a loaded YAML tree (keys included): what compose interpolates."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings_of(key)
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)
    elif isinstance(value, str):
        yield value


def variable_uses(document: Any) -> Iterator[re.Match[str]]:
    for text in strings_of(document):
        for match in VARIABLE.finditer(text):
            if not match["escaped"]:
                yield match


def referenced_variables(document: Any) -> set[str]:
    return {match["braced"] or match["named"] for match in variable_uses(document)}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as compose's --env-file reads them (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def example_env(**secrets: str) -> dict[str, str]:
    """docker/.env.example with every empty secret filled in (a test value each)."""
    env = read_env_file(ENV_EXAMPLE)
    for name, value in env.items():
        if SECRET.search(name) and not value:
            env[name] = secrets.get(name, f"test-{name.lower().replace('_', '-')}")
    return {**env, **secrets}


def compose(env: Mapping[str, str]) -> dict[str, Any]:
    return interpolate(raw_compose(), env)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a list of NAME=value as well)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *argv = test
    return ["sh", "-c", argv[0]] if kind == "CMD-SHELL" else argv


def serving_script(services: Mapping[str, Any]) -> list[list[str]]:
    """The serving service's shell script, one command a line (the compose file writes it so)."""
    command = services["serving"]["command"]
    assert command[:2] == ["sh", "-c"], command
    lines = [shlex.split(line) for line in command[2].splitlines() if line.strip()]
    return [argv[:-1] if argv[-1] == "&" else argv for argv in lines]


# -- the command-line tools the stack runs --------------------------------------------------------


def click_command(program: str) -> click.Command:
    """The click command behind a console script of the locked environment."""
    # Deduplicated by target: a distribution may declare the same script twice.
    (entry_point,) = {
        ep.value: ep
        for ep in importlib.metadata.entry_points(group="console_scripts", name=program)
    }.values()
    loaded = entry_point.load()
    if isinstance(loaded, click.Command):
        return loaded
    return importlib.import_module(entry_point.module).cli


def parse_command_line(argv: list[str]) -> list[str]:
    """Parse ``argv`` with the real CLI, down to its subcommand; return the command path.

    Click checks option names, types, choices and required arguments, without running anything.
    """
    command = click_command(argv[0])
    context = command.make_context(argv[0], list(argv[1:]), resilient_parsing=False)
    path = [argv[0]]
    while isinstance(command, click.Group) and context.protected_args:
        name, *rest = [*context.protected_args, *context.args]
        command = command.get_command(context, name)
        assert command is not None, f"{' '.join(path)} has no subcommand {name}"
        context = command.make_context(name, rest, parent=context)
        path.append(name)
    return path


# -- unit: the files as written -------------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile",
    sorted(p for p in DOCKER.rglob("Dockerfile*") if not p.name.endswith(".dockerignore")),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_file_follows_the_compose_spec() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The vendored schema predates the top-level project name, which compose reads since 2.3.
    document = raw_compose()
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", document.pop("name"))
    # Its $schema URI is one jsonschema does not recognize; it is draft 2019-09.
    validator = jsonschema.Draft201909Validator(schema)
    interpolated = compose(example_env())
    interpolated.pop("name")
    for candidate in (document, interpolated):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(candidate)]
        assert not errors, "\n".join(errors)


def test_the_compose_file_refers_only_to_what_exists() -> None:
    services = compose(example_env())["services"]
    assert set(services) == SERVICES
    volumes = set(raw_compose()["volumes"])
    dockerfile = (DOCKER / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file(), name
            assert build["target"] in targets, name
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                if source != "./data":  # BANK_MARKETING_DATA_DIR: the operator's data folder
                    assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
    for name in ("bank_marketing/serving/serve_config.yaml", "workspace.yaml", "dagster.yaml"):
        assert (REPO / name).is_file()


def test_every_service_is_health_checked_and_started_after_what_it_needs() -> None:
    services = compose(example_env())["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no" and "healthcheck" not in service, name
        else:
            assert healthcheck_argv(service), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            # A one-shot service is waited for until it exits, and must have succeeded.
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition == {"condition": wanted}, (name, dependency)
    needs = {
        "postgres": set(),
        "mlflow": {"postgres"},
        "migrate": {"postgres"},
        "serving": {"postgres", "migrate", "mlflow"},
        "dagster-webserver": {"postgres", "mlflow"},
        "dagster-daemon": {"postgres", "migrate", "mlflow", "serving"},
        "bootstrap": {"postgres", "migrate", "mlflow"},
        "prometheus": set(),
        "grafana": {"postgres", "migrate", "prometheus"},
    }
    assert {name: set(s.get("depends_on") or {}) for name, s in services.items()} == needs
    # Base images are pinned to a release, never a moving tag.
    dockerfile = (DOCKER / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    images = [s["image"] for s in services.values() if "build" not in s]
    images += [i for i in re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) if i not in stages]
    for image in images:
        assert re.search(r":v?\d+\.\d+", image), f"{image} is not pinned to a release"
    assert services["postgres"]["image"].startswith("postgres:15.")
    assert services["grafana"]["image"].startswith("grafana/grafana:12.")
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", services["prometheus"]["image"])


def test_every_published_port_is_on_127_0_0_1_and_configurable() -> None:
    """Host ports on the loopback interface unless PUBLISH_ADDRESS says otherwise, each port from
    its own variable; docker/.env.example keeps the loopback default."""
    for name, service in raw_compose()["services"].items():
        for port in service.get("ports") or []:
            assert re.fullmatch(
                r"\$\{PUBLISH_ADDRESS:-127\.0\.0\.1\}:\$\{[A-Z_]+_PORT:-\d+\}:\d+", port
            ), (name, port)
    assert read_env_file(ENV_EXAMPLE)["PUBLISH_ADDRESS"] == "127.0.0.1"


def test_grafana_allows_no_anonymous_access() -> None:
    grafana = raw_compose()["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    used = referenced_variables(raw_compose())
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "used by compose, missing from docker/.env.example"
    assert documented - used == set(), "in docker/.env.example, not used by compose"


def test_no_secret_is_committed() -> None:
    document = raw_compose()
    secrets = {name for name in referenced_variables(document) if SECRET.search(name)}
    assert {"POSTGRES_PASSWORD", "GRAFANA_DB_PASSWORD", "BANK_MARKETING_WEBHOOK_TOKEN"} <= secrets
    # Every secret is required (${NAME:?...}): no default value can stand in for it.
    for match in variable_uses(document):
        if (match["braced"] or match["named"]) in secrets:
            assert match["op"] == ":?", f"{match[0]} must be required, without a default"
    env = read_env_file(ENV_EXAMPLE)
    assert all(env[name] == "" for name in secrets), "docker/.env.example holds a secret value"
    # So compose refuses the example as it is, naming what is missing.
    with pytest.raises(MissingVariable, match=r"set \w+ in docker/\.env"):
        compose(env)
    # No literal secret anywhere in the stack's files: only ${VAR} (compose), env: (dagster.yaml),
    # or psql variables (the init script) carry one.
    assignment = re.compile(
        r"(?:^|\s)[\"']?[A-Za-z_]*(?:PASSWORD|TOKEN|SECRET)[A-Za-z_]*[\"']?[:=]\s*(\S*)",
        re.IGNORECASE,
    )
    sql_literal = re.compile(r"PASSWORD\s+'", re.IGNORECASE)
    files = [COMPOSE_FILE, REPO / "dagster.yaml", *INIT_SCRIPTS, DOCKER / "Dockerfile"]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            if line.lstrip().startswith(("#", "--")):
                continue
            for value in assignment.findall(line):
                assert value.lstrip("\"'").startswith("$") or not value, where
            assert not sql_literal.search(line), where
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, "docker/.env is not ignored by git"


def test_every_command_the_stack_runs_parses_with_the_installed_tools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # where the images keep the code (WORKDIR /app)
    services = compose(example_env())["services"]
    ran = {
        "mlflow": parse_command_line(services["mlflow"]["command"]),
        "dagster-webserver": parse_command_line(services["dagster-webserver"]["command"]),
        "dagster-daemon": parse_command_line(services["dagster-daemon"]["command"]),
        "daemon healthcheck": parse_command_line(healthcheck_argv(services["dagster-daemon"])),
    }
    for argv in serving_script(services):
        if argv[0] in ("ray", "serve"):
            ran[" ".join(argv[:2])] = parse_command_line(argv)
    dockerfile = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    for cmd in re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE):
        argv = json.loads(cmd)
        ran[f"Dockerfile CMD {argv[0]}"] = parse_command_line(argv)
    from bank_marketing.cli import build_parser

    bootstrap = services["bootstrap"]["command"]
    assert bootstrap[:2] == ["bank-marketing", "bootstrap"]
    parsed = build_parser().parse_args(bootstrap[1:])
    assert (parsed.first_as_of, parsed.through) == ("2008-12", "2009-06")
    migrate = services["migrate"]["command"]
    assert migrate[0] == "bank-marketing"
    parsed = build_parser().parse_args(migrate[1:])
    assert (parsed.command, parsed.db_command, parsed.schema) == ("db", "upgrade", None)
    # It needs the monitoring database's URL, and is handed no other secret.
    migrate_env = environment_of(services["migrate"])
    assert migrate_env == {
        "BANK_MARKETING_DB_URL": environment_of(services["serving"])["BANK_MARKETING_DB_URL"]
    }
    assert not services["migrate"]["volumes"]
    assert ran["mlflow"] == ["mlflow", "server"]
    assert ran["dagster-daemon"] == ["dagster-daemon", "run"]
    assert ran["daemon healthcheck"] == ["dagster-daemon", "liveness-check"]
    assert {"ray start", "serve start", "serve deploy"} <= set(ran)
    # The Ray head takes `serve deploy` from other containers; Serve answers on every interface.
    script = " ".join(services["serving"]["command"][2].split())
    assert "--dashboard-host=0.0.0.0" in script and "--http-host=0.0.0.0" in script
    assert "serve deploy bank_marketing/serving/serve_config.yaml" in script
    mlflow_command = services["mlflow"]["command"]
    allowed = mlflow_command[mlflow_command.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow", "mlflow:5000"} <= set(allowed)


def flag_value(argv: list[str], flag: str) -> str:
    """The value of ``flag`` in ``argv``, written ``--flag=value`` or ``--flag value``."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"{flag}="):
            return arg.partition("=")[2]
        if arg == flag:
            return argv[index + 1]
    raise AssertionError(f"{flag} is not in {shlex.join(argv)}")


def test_prometheus_scrapes_the_ray_heads_metrics_port_and_grafana_reads_prometheus() -> None:
    services = compose(example_env())["services"]
    (ray_start,) = [argv for argv in serving_script(services) if argv[:2] == ["ray", "start"]]
    metrics_port = int(flag_value(ray_start, "--metrics-export-port"))
    prometheus = services["prometheus"]
    # Its configuration is docker/prometheus/prometheus.yml, mounted where the command reads it;
    # its data is a volume.
    mounts = {
        target: source
        for source, target, *_ in (mount.split(":") for mount in prometheus["volumes"])
    }
    config_path = mounts[flag_value(prometheus["command"], "--config.file")]
    assert (DOCKER / config_path).resolve() == PROMETHEUS_CONFIG
    assert mounts[flag_value(prometheus["command"], "--storage.tsdb.path")] in set(
        raw_compose()["volumes"]
    )
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert set(config) == {"global", "scrape_configs"}
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [target for group in job["static_configs"] for target in group["targets"]] == [
        f"serving:{metrics_port}"
    ]
    # Ray refreshes its export about every 10 s: scraped at that pace.
    scrape_interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert scrape_interval == "10s"
    # Prometheus listens on its default port; its healthcheck and published port are that one.
    assert not any(arg.startswith("--web.listen-address") for arg in prometheus["command"])
    (published,) = prometheus["ports"]
    assert published.rsplit(":", 1)[1] == "9090"
    assert "http://127.0.0.1:9090/-/ready" in healthcheck_argv(prometheus)
    # Grafana's Prometheus datasource is this service, with the scrape interval as its smallest
    # step (so $__rate_interval spans four scrapes), and Grafana starts after it.
    datasources = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    (source,) = [source for source in datasources if source["type"] == "prometheus"]
    assert source["url"] == "http://prometheus:9090"
    assert source["jsonData"]["timeInterval"] == scrape_interval
    assert "prometheus" in services["grafana"]["depends_on"]


def test_make_up_needs_docker_env_and_runs_compose(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "docker").mkdir()
    # Not as a sub-make of `make test`: the targets run as from a shell.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    missing = subprocess.run(["make", "up"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode != 0
    assert "docker/.env is missing: copy docker/.env.example" in missing.stderr
    (tmp_path / "docker" / ".env").write_text("")
    for target, command in (("up", "up -d --build"), ("down", "down")):
        planned = subprocess.run(
            ["make", "-n", target], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert planned.returncode == 0, planned.stderr
        expected = f"docker compose -f docker/compose.yaml --env-file docker/.env {command}"
        assert expected in planned.stdout


# -- integration: each service's command, natively ------------------------------------------------


@dataclass
class Native:
    """The stack on this machine: where each service name points, the unique names of the
    databases and roles, the state folders, and the processes started from the compose file."""

    addresses: dict[str, tuple[str, int]]  # "mlflow:5000" -> ("127.0.0.1", 5xxxx)
    names: dict[str, str]  # database and role names -> this test's own
    dagster_home: Path
    bank_marketing_home: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    # What the one-shot `migrate` did before the services started, as compose orders it.
    migrated: subprocess.CompletedProcess[str] | None = None

    def url(self, service: str, port: int) -> str:
        host, native_port = self.addresses[f"{service}:{port}"]
        return f"http://{host}:{native_port}"

    def port(self, service: str, port: int) -> int:
        return self.addresses[f"{service}:{port}"][1]

    def value(self, name: str, value: str) -> str:
        """One environment value of a service, pointed at this machine."""
        if value.startswith("postgresql"):
            url = sa.make_url(value)
            host, port = self.addresses[f"{url.host}:{url.port}"]
            return url.set(
                host=host,
                port=port,
                username=self.names.get(url.username or "", url.username),
                database=self.names.get(url.database or "", url.database),
            ).render_as_string(hide_password=False)
        if name.endswith("_HOST"):
            return next(h for key, (h, _) in self.addresses.items() if key.startswith(f"{value}:"))
        if name.endswith(("_USER", "_DB", "_NAME")):
            return self.names.get(value, value)
        return self.text(value)

    def text(self, value: str) -> str:
        """``value`` with the service addresses of its URLs (and 0.0.0.0) replaced by this
        machine's. Bare names stay: ``--allowed-hosts mlflow:5000`` is what clients send."""
        for address, (host, port) in self.addresses.items():
            value = value.replace(f"://{address}", f"://{host}:{port}")
        return value.replace("0.0.0.0", "127.0.0.1")

    def command(self, argv: list[str], own_ports: Mapping[int, int] | None = None) -> list[str]:
        """``argv`` for this machine: addresses replaced, the service's own ports remapped."""
        result = []
        for arg in argv:
            for port, native_port in (own_ports or {}).items():
                arg = re.sub(rf"(^|=|127\.0\.0\.1:){port}$", rf"\g<1>{native_port}", arg)
                arg = arg.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{native_port}/")
            result.append(self.text(arg))
        return result

    def environment(self, service: Mapping[str, Any], **extra: str) -> dict[str, str]:
        """The process environment of ``service`` here: the image's, then the compose file's."""
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("BANK_MARKETING_", "DAGSTER_", "MLFLOW_", "RAY_AUTH_"))
        }
        image = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_USAGE_STATS_ENABLED": "0",
            "DAGSTER_HOME": str(self.dagster_home),
            "BANK_MARKETING_HOME": str(self.bank_marketing_home),
        }
        declared = {n: self.value(n, v) for n, v in environment_of(service).items()}
        return {**base, **image, **declared, **extra}

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        log = self.dagster_home.parent / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as output:
            self.processes[name] = subprocess.Popen(
                argv,
                cwd=REPO,
                env=dict(env),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run_once(self, service: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        """Run a one-shot service's command here, to its end."""
        return subprocess.run(
            self.command(service["command"]),
            env=self.environment(service),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def tail(self, name: str, lines: int = 40) -> str:
        text = self.logs[name].read_text(errors="replace") if name in self.logs else ""
        return f"\n--- last lines of {name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_for(self, name: str, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}){self.tail(name)}")
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(1)
        raise AssertionError(f"{name}: {what} within {timeout_s:.0f} s{self.tail(name)}")

    def wait_for_200(self, name: str, url: str, timeout_s: float) -> None:
        """Wait until ``GET url`` answers 200 while ``name`` keeps running."""
        self.wait_for(
            name,
            lambda: httpx.get(url, timeout=5).status_code == 200,
            timeout_s=timeout_s,
            what=f"GET {httpx.URL(url).path} did not answer 200",
        )

    def healthcheck_passes(self, services: Mapping[str, Any], name: str) -> bool:
        """Whether the compose file's healthcheck of ``name`` passes here."""
        own = {
            int(key.partition(":")[2]): port
            for key, (_, port) in self.addresses.items()
            if key.partition(":")[0] == name
        }
        argv = self.command(healthcheck_argv(services[name]), own)
        env = self.environment(services[name])
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, timeout=60)
        return done.returncode == 0

    def stop_all(self) -> None:
        """SIGTERM to each process group started here, then SIGKILL to whatever of the group is
        left (code servers, run workers), after a few seconds."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _connect(native: Native, database: str, role: str) -> Any:
    connection = psycopg2.connect(
        host="127.0.0.1", port=5432, dbname=native.names[database], user=native.names[role]
    )
    connection.autocommit = True
    return connection


def _query(native: Native, database: str, role: str, sql: str) -> list[tuple[Any, ...]]:
    connection = _connect(native, database, role)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """docker/.env for these tests: the example's values, test secrets, a local artifact folder,
    and the local copy of the data (BANK_MARKETING_SOURCE), as an offline operator sets it."""
    folder = tmp_path_factory.mktemp("mlflow-artifacts")
    source = os.environ.get("BANK_MARKETING_SOURCE", "")
    return example_env(
        MLFLOW_ARTIFACTS_DESTINATION=str(folder),
        BANK_MARKETING_SOURCE=source if Path(source).is_file() else "",
    )


@pytest.fixture(scope="module")
def services(stack_env: dict[str, str]) -> dict[str, Any]:
    return compose(stack_env)["services"]


@pytest.fixture(scope="module")
def native(
    postgres_available: None,
    services: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Native]:
    """docker/postgres/init run on this machine's PostgreSQL (databases and roles under names of
    this test's own), then `mlflow server` and the Dagster webserver and daemon started from the
    compose file; everything is stopped and dropped afterwards. The services boot in parallel;
    each test waits for its own."""
    if shutil.which("psql") is None:
        skip_or_fail("psql (PostgreSQL's client) is needed to run docker/postgres/init")
    suffix = uuid.uuid4().hex[:8]
    postgres_env = environment_of(services["postgres"])
    database_keys = ("BANK_MARKETING_DB_NAME", "MLFLOW_DB_NAME", "DAGSTER_PG_DB")
    role_keys = ("BANK_MARKETING_DB_USER", "MLFLOW_DB_USER", "DAGSTER_PG_USER", "GRAFANA_DB_USER")
    names = {
        postgres_env[key]: f"{postgres_env[key]}_stack_{suffix}"
        for key in (*database_keys, *role_keys)
    }
    folder = tmp_path_factory.mktemp("stack")
    dagster_home = folder / "dagster_home"
    (dagster_home / "storage").mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # as the image does
    native = Native(
        addresses={
            "postgres:5432": ("127.0.0.1", 5432),
            "mlflow:5000": ("127.0.0.1", free_port()),
            "dagster-webserver:3000": ("127.0.0.1", free_port()),
        },
        names=names,
        dagster_home=dagster_home,
        bank_marketing_home=folder / "bank-marketing",
    )
    try:
        init_env = native.environment(
            services["postgres"], PGHOST="127.0.0.1", PGPORT="5432", POSTGRES_USER=POSTGRES["user"]
        )
        for script in INIT_SCRIPTS:
            done = subprocess.run(
                [str(script)], env=init_env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{script.name}: {done.stderr}"
        native.migrated = native.run_once(services["migrate"])
        for name, port in (("mlflow", 5000), ("dagster-webserver", 3000), ("dagster-daemon", 0)):
            own = {port: native.port(name, port)} if port else {}
            native.start(
                name,
                native.command(services[name]["command"], own),
                native.environment(services[name]),
            )
        yield native
    finally:
        native.stop_all()
        admin = psycopg2.connect(**POSTGRES)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                for key in database_keys:
                    cursor.execute(
                        f'DROP DATABASE IF EXISTS "{names[postgres_env[key]]}" WITH (FORCE)'
                    )
                for key in role_keys:
                    cursor.execute(f'DROP ROLE IF EXISTS "{names[postgres_env[key]]}"')
        finally:
            admin.close()


@pytest.fixture(scope="module")
def stack(native: Native, ray_cluster: RayCluster) -> Native:
    """The stack with the session's Ray in place of `ray start --head` (it boots meanwhile)."""
    native.addresses["serving:8000"] = ("127.0.0.1", int(ray_cluster.http_url.rsplit(":", 1)[1]))
    native.addresses["serving:8265"] = (
        "127.0.0.1",
        int(ray_cluster.dashboard_url.rsplit(":", 1)[1]),
    )
    return native


@pytest.mark.integration
def test_postgres_init_gives_each_service_its_database_and_grafana_read_only_access(
    stack: Native,
) -> None:
    _query(stack, "bank_marketing", "bank_marketing", "CREATE TABLE monitoring.probe (month date)")
    _query(stack, "bank_marketing", "bank_marketing", "INSERT INTO monitoring.probe VALUES (now())")
    # Tables the app role creates later are readable by Grafana, by bare name (search_path) ...
    assert len(_query(stack, "bank_marketing", "grafana", "SELECT month FROM probe")) == 1
    # ... and only readable.
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        _query(stack, "bank_marketing", "grafana", "INSERT INTO probe VALUES (now())")
    # Each service's role reaches its own database only.
    for database, role in (("bank_marketing", "dagster"), ("dagster", "mlflow")):
        with pytest.raises(psycopg2.OperationalError, match="CONNECT privilege"):
            _query(stack, database, role, "SELECT 1")


@pytest.mark.integration
def test_migrate_upgrades_the_monitoring_database_before_the_services_open_it(
    native: Native, services: dict[str, Any]
) -> None:
    from bank_marketing.monitoring import migrations, store

    done = native.migrated
    assert done is not None and done.returncode == 0, done and done.stdout + done.stderr
    head = migrations.head()
    assert f"(schema monitoring): upgraded no tables -> {head} (head)" in done.stdout
    assert "test-bank-marketing-db-password" not in done.stdout + done.stderr
    version = "SELECT version_num FROM monitoring.alembic_version"
    assert _query(native, "bank_marketing", "bank_marketing", version) == [(head,)]
    # Made by the application's role, so Grafana reads every table (docker/postgres/init's
    # default privileges), the version table included.
    owned = _query(
        native,
        "bank_marketing",
        "bank_marketing",
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'monitoring'",
    )
    role = native.names["bank_marketing"]
    assert {name for name, owner in owned if owner == role} >= {
        *store.metadata.tables,
        "alembic_version",
    }
    for table in (*store.metadata.tables, "alembic_version"):
        assert _query(native, "bank_marketing", "grafana", f"SELECT count(*) FROM {table}")
    # Started again (compose runs it on every start), it changes nothing.
    again = native.run_once(services["migrate"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"at {head} (head), nothing to do" in again.stdout
    assert _query(native, "bank_marketing", "bank_marketing", version) == [(head,)]


@pytest.fixture(scope="module")
def mlflow_url(stack: Native) -> str:
    url = stack.url("mlflow", 5000)
    stack.wait_for_200("mlflow", f"{url}/health", timeout_s=150)
    return url


@pytest.mark.integration
def test_mlflow_server_runs_on_its_postgres_store_and_serves_artifacts(
    stack: Native, services: dict[str, Any], mlflow_url: str, stack_env: dict[str, str]
) -> None:
    assert stack.healthcheck_passes(services, "mlflow")
    search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5"
    # --allowed-hosts: other containers reach it by its service name; a foreign Host gets 403.
    for host, status in (("mlflow:5000", 200), ("mlflow", 200), ("attacker.example", 403)):
        assert httpx.get(search, headers={"Host": host}, timeout=10).status_code == status, host
    # The tracking store is the mlflow database; artifacts go through the server to its folder.
    client = MlflowClient(mlflow_url)
    run = client.create_run(client.create_experiment(f"stack-{uuid.uuid4().hex[:6]}"))
    client.log_text(run.info.run_id, "proxied", "probe.txt")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = list(Path(stack_env["MLFLOW_ARTIFACTS_DESTINATION"]).rglob("probe.txt"))
    assert [p.read_text() for p in stored] == ["proxied"]
    runs = f"SELECT run_uuid FROM runs WHERE run_uuid = '{run.info.run_id}'"
    assert _query(stack, "mlflow", "mlflow", runs) == [(run.info.run_id,)]


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              sensors { name }
              assetNodes { assetKey { path } }
            }
          }
        }
      }
    }
  }
  instance {
    runLauncher { name }
    runQueuingSupported
    runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml }
  }
}
"""

DAEMONS_QUERY = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""


@pytest.fixture(scope="module")
def webserver_url(stack: Native) -> str:
    url = stack.url("dagster-webserver", 3000)
    stack.wait_for_200("dagster-webserver", f"{url}/server_info", timeout_s=150)
    return url


@pytest.mark.integration
def test_dagster_webserver_serves_the_code_location_on_the_stack_instance(
    stack: Native, services: dict[str, Any], webserver_url: str
) -> None:
    from bank_marketing.orchestration.definitions import defs

    assert stack.healthcheck_passes(services, "dagster-webserver")
    data = _graphql(webserver_url, WORKSPACE_QUERY)
    (entry,) = data["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    assert entry["name"] == "bank_marketing"
    assert location["__typename"] == "RepositoryLocation", location.get("message")
    (repository,) = location["repositories"]
    assert {job.name for job in defs.jobs} <= {job["name"] for job in repository["jobs"]}
    assert {s.name for s in defs.sensors} == {s["name"] for s in repository["sensors"]}
    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert {"contacts", "training_set", "champion_model", "drift_report"} <= assets
    # The instance is the stack's dagster.yaml: a run queue with its limits.
    instance = data["instance"]
    assert instance["runLauncher"]["name"] == "DefaultRunLauncher"
    assert instance["runQueuingSupported"]
    assert instance["runQueueConfig"]["maxConcurrentRuns"] == 2
    limits = yaml.safe_load(instance["runQueueConfig"]["tagConcurrencyLimitsYaml"])
    one_run_per_month = {"applyLimitPerUniqueValue": True}
    assert {"key": "dagster/partition", "value": one_run_per_month, "limit": 1} in limits
    assert {"key": "bank_marketing/job", "value": "training", "limit": 1} in limits


@pytest.mark.integration
def test_dagster_daemon_runs_every_daemon_the_stack_configures(
    stack: Native, services: dict[str, Any], webserver_url: str
) -> None:
    stack.wait_for(
        "dagster-daemon",
        lambda: stack.healthcheck_passes(services, "dagster-daemon"),
        timeout_s=150,
        what="`dagster-daemon liveness-check` (the compose healthcheck) did not pass",
    )

    def statuses() -> list[dict[str, Any]]:
        health = _graphql(webserver_url, DAEMONS_QUERY)["instance"]["daemonHealth"]
        return [status for status in health["allDaemonStatuses"] if status["required"]]

    stack.wait_for(
        "dagster-daemon",
        lambda: all(status["healthy"] for status in statuses()),
        timeout_s=90,
        what="the daemons are not all healthy",
    )
    running = {status["daemonType"] for status in statuses()}
    # The run queue, the sensors, run monitoring, and run retries (the event log consumer): the
    # last two run only because dagster.yaml enables them.
    assert {"QUEUED_RUN_COORDINATOR", "SENSOR", "MONITORING", "EVENT_LOG_CONSUMER"} <= running


@pytest.fixture(scope="module")
def native_champion(stack: Native, mlflow_url: str, bank_full_path: Path) -> str:
    """A champion registered in the stack's MLflow server, as a training round registers one."""
    frame = load_contacts(str(bank_full_path), stack.bank_marketing_home).frame.iloc[:6000]
    frame = frame.assign(contact_month=recover_months(frame["month"]))  # as `contacts` has
    train, validation = frame.iloc[:4500], frame.iloc[4500:]
    params = {"C": 1.0, "max_iter": 2000, "class_weight": "none"}
    fitted = fit_candidate("logistic_regression", params, DEFAULT_INPUTS, train, validation)
    _, [record] = log_round(
        stack.bank_marketing_home,
        [(fitted, params)],
        train,
        validation,
        data_source=str(bank_full_path),
        uri=mlflow_url,
    )
    return str(record.model_version)


# A Grafana webhook notification with one firing alert (the format test_webhook.py covers). Its
# month is past the data, so the daemon's retrain_on_grafana_alert sensor, which reads the same
# database, records it and requests no training run.
NOTIFICATION = {
    "receiver": "bank-marketing", "status": "firing", "orgId": 1, "version": "1",
    "alerts": [{
        "status": "firing", "labels": {"alertname": "Prediction drift", "month": "2011-01"},
        "annotations": {}, "startsAt": "2024-03-02T10:15:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "5eed0f5eed0f5eed", "values": {"A": 0.31},
    }],
    "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
    "externalURL": "http://grafana:3000/",
}  # fmt: skip


@pytest.mark.integration
def test_serving_commands_serve_the_champion_and_the_webhook_on_the_shared_ray(
    stack: Native,
    services: dict[str, Any],
    stack_env: dict[str, str],
    ray_cluster: RayCluster,
    native_champion: str,
    tmp_path: Path,
) -> None:
    from ray import serve

    # The session's Ray stands in for `ray start --head` (and Serve's own `serve start`); its
    # authentication is its own, not the compose file's RAY_AUTH_*.
    env = {
        key: value
        for key, value in stack.environment(services["serving"]).items()
        if not key.startswith("RAY_AUTH_")
    }
    env["RAY_DASHBOARD_ADDRESS"] = ray_cluster.dashboard_url
    if os.environ.get("RAY_AUTH_MODE"):
        env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    # In the container the replicas inherit this environment from `ray start`; the session's Ray
    # was started by pytest, so the same variables reach them through the Serve config instead.
    relative_config = "bank_marketing/serving/serve_config.yaml"
    config = yaml.safe_load((REPO / relative_config).read_text())
    (application,) = config["applications"]
    passed = ("MLFLOW_TRACKING_URI", "BANK_MARKETING_DB_URL", "BANK_MARKETING_WEBHOOK_TOKEN")
    application["runtime_env"]["env_vars"].update({name: env[name] for name in passed})
    native_config = tmp_path / "serve_config.yaml"
    native_config.write_text(yaml.safe_dump(config))

    (deploy,) = [argv for argv in serving_script(services) if argv[:2] == ["serve", "deploy"]]
    assert relative_config in deploy
    deploy = [str(native_config) if arg == relative_config else arg for arg in deploy]
    url = ray_cluster.http_url
    try:
        done = subprocess.run(
            deploy, env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{shlex.join(deploy)}:\n{done.stdout}{done.stderr}"
        stack.wait_for_200("serving", f"{url}/healthz", timeout_s=120)
        assert httpx.get(f"{url}/model", timeout=10).json()["version"] == native_champion
        assert stack.healthcheck_passes(services, "serving")
        # Grafana's contact point: refused without the token, stored with it.
        webhook = f"{url}/webhooks/grafana"
        assert httpx.post(webhook, json=NOTIFICATION, timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {stack_env['BANK_MARKETING_WEBHOOK_TOKEN']}"}
        stored = httpx.post(webhook, json=NOTIFICATION, headers=bearer, timeout=30)
        assert stored.status_code == 202, stored.text
    finally:
        serve.delete(application["name"])
    alerts = _query(stack, "bank_marketing", "grafana", "SELECT fingerprint FROM grafana_alerts")
    assert alerts == [("5eed0f5eed0f5eed",)]


@pytest.mark.integration
def test_grafana_reads_what_mlflow_and_dagster_wrote(
    stack: Native, mlflow_url: str, webserver_url: str, native_champion: str
) -> None:
    # Dagster's run storage (the pipeline-runs panel) and MLflow's registry, both read-only.
    runs = "SELECT count(*) FROM runs"
    assert _query(stack, "dagster", "grafana", runs) == _query(stack, "dagster", "dagster", runs)
    versions = "SELECT version FROM model_versions"
    assert _query(stack, "mlflow", "grafana", versions) == [(int(native_champion),)]
