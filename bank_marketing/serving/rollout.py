"""Rolling the prediction service over to a model version on a Ray cluster, as `serve deploy` does.

The Serve config (``serve_config.yaml``) goes to the Ray dashboard's REST API with the version to
serve in the deployment's ``user_config``. Serve applies a changed ``user_config`` to the running
replicas one at a time (``reconfigure``), so with two replicas no request fails; the first
deployment starts the replicas. Applications that others deployed on the cluster from a config
are sent back unchanged, because Serve deletes any config-deployed application a config omits.

    cluster = ServeCluster("http://127.0.0.1:8265", "http://127.0.0.1:8000", tracking_uri)
    rollout = cluster.roll_over("7")   # returns once the service answers with version 7

Secrets never enter the Serve config, since the Ray dashboard shows it to anyone who reaches it
(``GET /api/serve/applications/``). A secret is the webhook token, or any variable named like a
token, password or key, or a URL with a password in it (a database URL, a tracking URI). On a
Ray cluster on this machine the replicas get it as a file: the rollout writes it, readable by its
owner only, under ``$BANK_MARKETING_HOME/secrets`` and passes ``NAME_FILE`` (the path), which
:mod:`bank_marketing.settings` reads. A cluster elsewhere cannot read this machine's files, so
there the secret is left out and the replicas inherit it from the environment the Ray head was
started with, as the stack's serving container does.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import yaml

from bank_marketing.settings import (
    ENV_TRACKING_URI,
    ENV_WEBHOOK_TOKEN,
    FILE_SUFFIX,
    SECRET_FILE_VARIABLES,
    home_from_env,
)

SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")
APP_NAME = "bank-marketing"
DEPLOYMENT_NAME = "PredictionService"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Times a rollout sends its config again when another deploy replaced it meanwhile.
RESENDS = 3
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIALS?|_KEY)$", re.IGNORECASE)

log = logging.getLogger(__name__)


def is_secret(name: str, value: str) -> bool:
    """Whether the variable ``name`` holding ``value`` must stay out of the Serve config."""
    return name == ENV_WEBHOOK_TOKEN or bool(SECRET_NAME.search(name)) or has_password(value)


def has_password(value: str) -> bool:
    """Whether ``value`` is a URL carrying a password, in its user part or its query."""
    try:
        parts = urlsplit(value)
        if parts.password is not None:
            return True
    except ValueError:
        return False
    return any(key.lower() == "password" for key in parse_qs(parts.query))


class RolloutError(RuntimeError):
    """The service could not be moved to the wanted version; the message says where it stopped."""


@dataclass(frozen=True)
class Rollout:
    """Where a version went live, and how the switch went."""

    version: str
    previous_version: str | None
    serve_url: str
    dashboard_url: str
    app_name: str
    app_status: str
    replicas: int
    seconds: float
    served: dict[str, Any]


class ServeCluster:
    """A Ray cluster's Serve control plane (its dashboard address) and the service's own URL."""

    def __init__(
        self,
        dashboard_url: str,
        serve_url: str,
        tracking_uri: str,
        *,
        app_name: str = APP_NAME,
        config_path: Path = SERVE_CONFIG,
        headers: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        secrets_dir: Path | None = None,
    ) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self.serve_url = serve_url.rstrip("/")
        self.tracking_uri = tracking_uri
        self.app_name = app_name
        self.config_path = config_path
        # Variables the replicas need besides the registry (the webhook's DB and token).
        self.environment = dict(environment or {})
        # Where secrets for a cluster on this machine are written (module docstring).
        self.secrets_dir = secrets_dir or home_from_env(os.environ) / "secrets"
        self.headers = headers if headers is not None else self._local_token_header()

    # -- the cluster ------------------------------------------------------------------------

    def reachable(self) -> bool:
        """Whether a Ray dashboard answers at ``dashboard_url`` (asking for a token counts)."""
        try:
            response = httpx.get(f"{self.dashboard_url}/api/version", timeout=5)
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 401, 403)

    def is_local(self) -> bool:
        return urlsplit(self.dashboard_url).hostname in LOCAL_HOSTS

    def start_local(self, num_cpus: int | None = None, timeout_s: float = 120.0) -> None:
        """Start a Ray head on this machine (``ray start --head``) that outlives this process.

        Stop it with :meth:`stop_local` (``ray stop`` stops every Ray on the machine). Usage
        statistics are off; the dashboard listens on the port of ``dashboard_url``, on this
        machine only.
        """
        if not self.is_local():
            raise RolloutError(
                f"no Ray cluster answers at {self.dashboard_url}, and it is not on this machine, "
                f"so none is started here; start the cluster or fix RAY_DASHBOARD_ADDRESS"
            )
        port = urlsplit(self.dashboard_url).port or 8265
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", "0",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(port),
            "--disable-usage-stats",
        ]  # fmt: skip
        if num_cpus is not None:
            command += ["--num-cpus", str(num_cpus)]
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "bank_marketing.serving.proxy.middlewares",
        }
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RolloutError(f"`ray start --head` failed (exit {done.returncode}):\n{tail}")
        deadline = time.monotonic() + timeout_s
        while not self.reachable():
            if time.monotonic() > deadline:
                raise RolloutError(f"Ray started, but no dashboard answers at {self.dashboard_url}")
            time.sleep(1)

    def local_head(self) -> list[psutil.Process]:
        """The processes of the Ray head on this machine whose dashboard is ``dashboard_url``:
        those that name its session folder (GCS, raylet, dashboard, monitors) and their children
        (workers, agents). Empty when none runs here."""
        port = urlsplit(self.dashboard_url).port or 8265
        sessions = set()
        for process in psutil.process_iter(["cmdline"]):
            command = process.info["cmdline"] or []
            if any(part.endswith("dashboard/dashboard.py") for part in command) and (
                f"--port={port}" in command
            ):
                sessions |= {p.split("=", 1)[1] for p in command if p.startswith("--session-dir=")}
        if not sessions:
            return []
        head: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["cmdline"]):
            command = " ".join(process.info["cmdline"] or [])
            if any(session in command for session in sessions):
                head[process.pid] = process
        for process in list(head.values()):
            with contextlib.suppress(psutil.Error):
                head.update({child.pid: child for child in process.children(recursive=True)})
        head.pop(os.getpid(), None)
        return list(head.values())

    def stop_local(self, timeout_s: float = 30.0) -> int:
        """Stop the local head of :meth:`local_head` (SIGTERM, then SIGKILL for what is left
        after ``timeout_s``), leaving any other Ray on the machine alone; how many processes."""
        processes = self.local_head()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=timeout_s)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=timeout_s)
        return len(processes)

    # -- the application --------------------------------------------------------------------

    def app_config(self, version: str, shadow_version: str | None = None) -> dict[str, Any]:
        """Our application's entry of the Serve config, serving ``version`` (and scoring
        ``shadow_version`` beside it, in shadow).

        Secrets are replaced by files, or left out (module docstring); for a cluster on this
        machine this writes their files.
        """
        config = self._file_config()
        apps = config.get("applications") or []
        if len(apps) != 1:
            raise RolloutError(f"{self.config_path} must hold exactly one application")
        app = copy.deepcopy(apps[0])
        app["name"] = self.app_name
        app["route_prefix"] = urlsplit(self.serve_url).path or "/"
        args = app.setdefault("args", {})
        env_vars = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        shown = [
            f"{where}.{name}"
            for where, values in (("args", args), ("runtime_env.env_vars", env_vars))
            for name, value in values.items()
            if is_secret(name, str(value))
        ]
        if shown:
            raise RolloutError(
                f"{self.config_path} holds a secret in {', '.join(shown)}, which the Ray "
                f"dashboard would show: set it in the environment instead"
            )
        if self.tracking_uri and not has_password(self.tracking_uri):
            args["tracking_uri"] = self.tracking_uri
        # MLflow resolves models:/ URIs against the process's registry, so the replicas get it too.
        variables = {ENV_TRACKING_URI: self.tracking_uri, **self.environment}
        for name, value in variables.items():
            if not value:
                continue
            if not is_secret(name, value):
                env_vars[name] = value
            elif self.is_local():
                env_vars[name + FILE_SUFFIX] = str(self._secret_file(name, value))
            else:
                log.info(
                    "%s is left out of the Serve config: the replicas on %s inherit it from the "
                    "Ray head's environment",
                    name,
                    self.dashboard_url,
                )
        deployments = app.setdefault("deployments", [{"name": DEPLOYMENT_NAME}])
        ours = [d for d in deployments if d.get("name") == DEPLOYMENT_NAME]
        if not ours:
            raise RolloutError(f"{self.config_path} has no deployment named {DEPLOYMENT_NAME}")
        ours[0]["user_config"] = {"model_version": str(version)}
        if shadow_version:
            ours[0]["user_config"]["shadow_version"] = str(shadow_version)
        return app

    def deploy_config(
        self, version: str, current: dict[str, Any], shadow_version: str | None = None
    ) -> dict[str, Any]:
        """The config to send: the file's options, our app, and the others left as they are."""
        from ray.serve.schema import ServeDeploySchema

        config = self._file_config()
        port = urlsplit(self.serve_url).port
        if port is not None:
            config.setdefault("http_options", {})["port"] = port
        others = [
            details["deployed_app_config"]
            for name, details in (current.get("applications") or {}).items()
            if name != self.app_name and details.get("deployed_app_config")
        ]
        config["applications"] = [*others, self.app_config(version, shadow_version)]
        try:
            ServeDeploySchema.model_validate(config)
        except ValueError as error:
            raise RolloutError(
                f"the Serve config from {self.config_path} is invalid: {error}"
            ) from error
        return config

    def details(self) -> dict[str, Any]:
        """What Serve reports about its applications (``serve status``, in full)."""
        return self._client().get_serve_details()

    def served_model(self) -> dict[str, Any] | None:
        """The service's ``GET /model`` answer, or None when it does not answer with a model."""
        try:
            response = httpx.get(f"{self.serve_url}/model", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def roll_over(
        self,
        version: str,
        timeout_s: float = 180.0,
        confirmations: int = 8,
        shadow_version: str | None = None,
    ) -> Rollout:
        """Serve ``version`` (with ``shadow_version`` in shadow), and return once the service
        answers with both.

        Waits until the deployment is healthy with the new ``user_config`` and then
        ``confirmations`` answers in a row from ``GET /model`` name ``version`` (requests go to
        every replica). A version a replica cannot load leaves the previous one served: that
        shows here as a timeout that names the version still answering. A config that another
        deploy puts in place meanwhile (a serving container that restarted deploys its own) is
        replaced by this one again, up to ``RESENDS`` times.
        """
        started = time.monotonic()
        previous = self.served_model()
        wanted = {"model_version": str(version)}
        if shadow_version:
            wanted["shadow_version"] = str(shadow_version)
        self._deploy(version, shadow_version)
        resent = 0
        deadline = started + timeout_s
        status, replicas, served, streak = "NOT_STARTED", 0, None, 0
        while time.monotonic() < deadline:
            status, replicas, settled = self._app_state(version)
            submitted = self._submitted_user_config()
            if submitted is not None and submitted != wanted and resent < RESENDS:
                # Another deploy replaced ours while we waited (a serving container that
                # restarted deploys its own config): the version asked for here is sent again.
                resent += 1
                log.warning(
                    "the Serve config of %s was replaced (user_config %s) while v%s was rolled "
                    "out: sending it again (%d of %d)",
                    self.app_name, submitted, version, resent, RESENDS,
                )  # fmt: skip
                self._deploy(version, shadow_version)
                streak = 0
                continue
            if status == "DEPLOY_FAILED":
                message = self.details()["applications"][self.app_name].get("message", "")
                raise RolloutError(f"Serve could not deploy {self.app_name}: {message}")
            answer = self.served_model() if settled else None
            if (
                answer is not None
                and str(answer.get("version")) == str(version)
                and answer.get("shadow_version")
                == (str(shadow_version) if shadow_version else None)
            ):
                served, streak = answer, streak + 1
                if streak >= confirmations:
                    return Rollout(
                        version=str(version),
                        previous_version=str(previous["version"]) if previous else None,
                        serve_url=self.serve_url,
                        dashboard_url=self.dashboard_url,
                        app_name=self.app_name,
                        app_status=status,
                        replicas=replicas,
                        seconds=round(time.monotonic() - started, 1),
                        served=served,
                    )
                continue
            streak = 0
            time.sleep(0.5)
        answering = self.served_model()
        still = f"v{answering['version']}" if answering else "no model"
        raise RolloutError(
            f"{self.serve_url} did not switch to v{version} within {timeout_s:.0f} s: application "
            f"{status}, {replicas} replica(s) running, the service answers with {still} (a "
            f"replica that cannot load a version keeps the one it has; its log says why)"
        )

    # -- helpers ----------------------------------------------------------------------------

    def _deploy(self, version: str, shadow_version: str | None) -> None:
        client = self._client()
        try:
            client.deploy_applications(
                self.deploy_config(version, client.get_serve_details(), shadow_version)
            )
        except RuntimeError as error:
            raise RolloutError(
                f"Serve refused the config at {self.dashboard_url}: {error}"
            ) from error

    def _submitted_user_config(self) -> dict[str, Any] | None:
        """The ``user_config`` of our deployment in the config Serve was last given, if any."""
        app = (self.details().get("applications") or {}).get(self.app_name) or {}
        for deployment in (app.get("deployed_app_config") or {}).get("deployments") or []:
            if deployment.get("name") == DEPLOYMENT_NAME:
                return {k: str(v) for k, v in (deployment.get("user_config") or {}).items()}
        return None

    def _local_token_header(self) -> dict[str, str]:
        """The token of a local Ray with token authentication (Ray keeps it in a file).

        A Ray head started here enables token authentication once a token file exists, and only
        a process connected to Ray sends it by itself; a local dashboard gets it from here.
        """
        if not self.is_local():
            return {}
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        try:
            token = path.read_text().strip()
        except OSError:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _secret_file(self, name: str, value: str) -> Path:
        """A file under ``secrets_dir`` that only its owner can read, holding ``value``.

        A file already holding the value is reused, so the config, and with it the replicas,
        change only when the secret does; a new value gets a new file, so a rollover after a
        rotation restarts the replicas on it, while replicas of the previous config can still
        start from theirs.
        """
        if name not in SECRET_FILE_VARIABLES:
            raise RolloutError(
                f"{name} holds a secret that the replicas cannot read from a file (only "
                f"{', '.join(SECRET_FILE_VARIABLES)} can): set it in the Ray head's environment"
            )
        folder = self.secrets_dir
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
            for path in sorted(folder.glob(f"{name}.*")):
                if secrets.compare_digest(path.read_bytes(), value.encode()):
                    return path
            path = folder / f"{name}.{secrets.token_hex(4)}"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(value)
        except OSError as error:
            raise RolloutError(
                f"cannot write {name} for the replicas under {folder}: {error.strerror or error}"
            ) from error
        return path

    def _app_state(self, version: str) -> tuple[str, int, bool]:
        """The app's status, its running replicas, and whether it runs ``version``'s config."""
        app = (self.details().get("applications") or {}).get(self.app_name)
        if app is None:
            return "NOT_STARTED", 0, False
        deployment = (app.get("deployments") or {}).get(DEPLOYMENT_NAME) or {}
        replicas = sum(1 for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING")
        target = (deployment.get("deployment_config") or {}).get("user_config") or {}
        settled = (
            app.get("status") == "RUNNING"
            and deployment.get("status") == "HEALTHY"
            and str(target.get("model_version")) == str(version)
        )
        return app.get("status", "UNKNOWN"), replicas, settled

    def _file_config(self) -> dict[str, Any]:
        try:
            config = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError) as error:
            message = f"cannot read the Serve config {self.config_path}: {error}"
            raise RolloutError(message) from error
        if not isinstance(config, dict):
            raise RolloutError(f"{self.config_path} is not a Serve config (a YAML mapping)")
        return config

    def _client(self) -> Any:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        try:
            return ServeSubmissionClient(self.dashboard_url, headers=self.headers)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RolloutError(
                f"no Ray dashboard answers at {self.dashboard_url}: {error}"
            ) from error
