"""Audit the packages pinned in uv.lock for known vulnerabilities (pip-audit, PyPI's data).

    python security/audit_dependencies.py                 # uv.lock, through `uv export`
    python security/audit_dependencies.py -r reqs.txt     # a requirements file instead

Every pinned package, dev tools included, is looked up in PyPI's vulnerability data (the same
OSV records PyPI shows on each release page). The rule: any known vulnerability fails the audit,
unless ``security/audit-ignore.toml`` lists its id with the reason it is accepted for now. When
PyPI cannot be reached the audit says so and passes, since nothing was audited rather than
something found: a network outage does not block CI, and the message says the lock was NOT
audited.

Exit status: 0 clean (or PyPI unreachable, said so), 1 a vulnerability found, 2 the audit could
not run (no lock, a broken ignore file, pip-audit failing for another reason).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
IGNORE_FILE = Path(__file__).with_name("audit-ignore.toml")
# A release's JSON, which holds its vulnerabilities: what pip-audit reads for every package.
SERVICE = "https://pypi.org/pypi/pip/24.0/json"
# What requests and urllib3 say when no answer comes back at all: a registry out of reach.
UNREACHABLE_SIGNS = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Max retries exceeded",
    "NameResolutionError",
    "ProxyError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
)


class AuditError(RuntimeError):
    """The audit could not run; the message says why."""


def read_ignored(path: Path) -> dict[str, str]:
    """Vulnerability id -> why it is accepted, from ``path``; every entry needs both."""
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("ignore", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise AuditError(f"cannot read the ignore list {path}: {error}") from error
    ignored = {}
    for number, entry in enumerate(entries, start=1):
        vuln_id, reason = entry.get("id", "").strip(), entry.get("reason", "").strip()
        if not vuln_id or not reason:
            raise AuditError(f"{path}: ignore entry {number} needs both an id and a reason")
        ignored[vuln_id] = reason
    return ignored


def export_lock(folder: Path) -> Path:
    """uv.lock's pins as a requirements file (the project itself left out: it is not on PyPI)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise AuditError("uv is not on PATH (nor named by UV): it exports uv.lock for the audit")
    target = folder / "requirements.txt"
    command = [
        uv, "export", "--frozen", "--format", "requirements-txt", "--no-emit-project",
        "--no-hashes", "--all-groups", "--output-file", str(target),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AuditError(f"`uv export` failed (exit {done.returncode}): {done.stderr.strip()}")
    return target


def pypi_reachable(timeout_s: float = 10.0) -> str | None:
    """None when PyPI's JSON API answers; otherwise what went wrong."""
    try:
        httpx.get(SERVICE, timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    return None


def run_pip_audit(requirements: Path, report: Path, timeout_s: int) -> subprocess.CompletedProcess:
    # --no-deps with --disable-pip: the pins are the whole resolved set already, so pip-audit
    # looks them up as they are instead of installing them into a scratch environment.
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps",
        "--disable-pip", "--vulnerability-service", "pypi", "--format", "json",
        "--output", str(report), "--progress-spinner", "off", "--timeout", str(timeout_s),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=False)


def findings(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(package, version, vulnerability) for every vulnerability in pip-audit's JSON report."""
    return [
        (dependency["name"], dependency.get("version", "?"), vuln)
        for dependency in report.get("dependencies", [])
        for vuln in dependency.get("vulns", [])
    ]


def unreachable(what: str, reason: str) -> int:
    print(
        f"dependency audit: PyPI's vulnerability service cannot be reached ({reason}); {what} "
        f"was NOT audited. The audit passes so that an outage does not block CI; run `make "
        f"audit` again once PyPI answers."
    )
    return 0


def judge(report: dict[str, Any], ignored: dict[str, str], what: str) -> int:
    """Print what pip-audit's ``report`` says and return the exit status (module docstring)."""
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    if dependencies and len(skipped) == len(dependencies):
        # Every per-release lookup failed: PyPI answers (or a proxy in front of it does) but
        # not with release data, which is no audit at all rather than a clean one.
        first = skipped[0]
        return unreachable(
            what,
            f"the release data of none of the {len(dependencies)} packages could be read; the "
            f"first: {first['skip_reason']}",
        )
    found = findings(report)
    failing = [f for f in found if f[2]["id"] not in ignored]
    for package, version, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
        aliases = ", ".join(vuln.get("aliases") or [])
        line = f"{package} {version}: {vuln['id']}" + (f" ({aliases})" if aliases else "")
        if vuln["id"] in ignored:
            print(f"ignored   {line}; fixed in: {fixes}; why: {ignored[vuln['id']]}")
        else:
            print(f"VULNERABLE {line}; fixed in: {fixes}")
    for vuln_id in sorted(set(ignored) - {vuln["id"] for _, _, vuln in found}):
        print(f"note: {vuln_id} is on the ignore list but no longer reported: remove it")
    for dependency in skipped:
        print(f"NOT AUDITED {dependency['name']}: {dependency['skip_reason']}")
    print(
        f"dependency audit of {what}: {len(dependencies) - len(skipped)} of {len(dependencies)} "
        f"packages audited, {len(found)} known vulnerabilities "
        f"({len(found) - len(failing)} ignored with a reason)"
    )
    return 1 if failing else 0


def audit(requirements: Path | None, ignore_file: Path, timeout_s: int) -> int:
    ignored = read_ignored(ignore_file)
    with tempfile.TemporaryDirectory(prefix="audit-") as scratch:
        folder = Path(scratch)
        source = requirements or export_lock(folder)
        what = str(requirements) if requirements else "uv.lock"
        report_path = folder / "report.json"
        done = run_pip_audit(source, report_path, timeout_s)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is not None:
        return judge(report, ignored, what)
    problem = pypi_reachable()
    if problem is not None or any(sign in done.stderr for sign in UNREACHABLE_SIGNS):
        return unreachable(what, problem or done.stderr.strip().splitlines()[-1])
    tail = "\n".join(done.stderr.strip().splitlines()[-10:])
    raise AuditError(f"pip-audit failed (exit {done.returncode}) without a report:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--requirement", type=Path, help="audit this file, not uv.lock")
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    parser.add_argument("--timeout", type=int, default=15, help="seconds per PyPI request")
    args = parser.parse_args(argv)
    try:
        return audit(args.requirement, args.ignore_file, args.timeout)
    except AuditError as error:
        print(f"dependency audit could not run: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
