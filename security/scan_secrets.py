"""Scan every commit of a git repository's history for secrets (MongoDB's Kingfisher).

    python security/scan_secrets.py                  # this repository
    python security/scan_secrets.py --repo PATH      # another one

Every object reachable from any ref is scanned, so a secret committed once and deleted later is
still found: it stays in the history, readable by anyone with a clone. The scan reads a mirror
of the history only, never the work tree (whose untracked files, ``.venv/`` or the embedded
state, are not in any commit). Nothing is sent anywhere: Kingfisher's live validation of found
credentials and its update check are off.

A finding that is reviewed and harmless (a test's fake token) is accepted by an entry in
``security/secrets-allowlist.toml`` that names its rule, its path and why. Findings are printed
without the secret itself, so the CI log does not repeat it.

Exit status: 0 no finding (or only allowed ones), 1 a secret found, 2 the scan could not run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).with_name("secrets-allowlist.toml")
# Kingfisher exits 200 when it reports findings, 205 when a validated one is among them.
KINGFISHER_FOUND = {0, 200, 205}


class ScanError(RuntimeError):
    """The scan could not run; the message says why."""


@dataclass(frozen=True)
class Allowed:
    rule: str
    path: str
    reason: str
    fingerprint: str | None = None

    def accepts(self, finding: dict[str, Any]) -> bool:
        return (
            finding["rule"] == self.rule
            and fnmatch.fnmatchcase(finding["path"], self.path)
            and (self.fingerprint is None or finding["fingerprint"] == self.fingerprint)
        )


def read_allowlist(path: Path) -> list[Allowed]:
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("allow", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ScanError(f"cannot read the allowlist {path}: {error}") from error
    allowed = []
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("rule", "path", "reason") if not str(entry.get(key, "")).strip()]
        if missing:
            raise ScanError(f"{path}: allow entry {number} lacks {', '.join(missing)}")
        fingerprint = entry.get("fingerprint")
        allowed.append(
            Allowed(
                entry["rule"],
                entry["path"],
                entry["reason"],
                str(fingerprint) if fingerprint else None,
            )
        )
    return allowed


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ScanError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def kingfisher_binary() -> str:
    try:
        from kingfisher import get_binary_path
    except ImportError as error:
        raise ScanError("kingfisher-bin is not installed (make install)") from error
    return get_binary_path()


def scan_history(repo: Path) -> tuple[int, dict[str, Any]]:
    """The number of commits, and Kingfisher's JSON report of a mirror of ``repo``'s history."""
    git("-C", str(repo), "rev-parse", "--git-dir")
    with tempfile.TemporaryDirectory(prefix="scan-secrets-") as scratch:
        mirror, report = Path(scratch) / "history.git", Path(scratch) / "report.json"
        git("clone", "--quiet", "--mirror", "--no-local", str(repo), str(mirror))
        commits = int(git("-C", str(mirror), "rev-list", "--all", "--count").strip() or 0)
        command = [
            kingfisher_binary(), "scan", str(mirror), "--git-history", "full",
            "--confidence", "low", "--no-validate", "--no-update-check", "--no-dedup",
            "--format", "json", "--output", str(report),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode not in KINGFISHER_FOUND or not report.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-10:])
            raise ScanError(f"kingfisher failed (exit {done.returncode}):\n{tail}")
        return commits, json.loads(report.read_text(encoding="utf-8"))


def findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each finding's rule, description, path, line, commit and fingerprint (not the secret)."""
    found = []
    for entry in report.get("findings", []):
        finding = entry["finding"]
        commit = ((finding.get("git_metadata") or {}).get("commit") or {}).get("id", "?")
        found.append(
            {
                "rule": entry["rule"]["id"],
                "description": entry["rule"].get("description", ""),
                "path": finding.get("path", "?"),
                "line": finding.get("line", "?"),
                "commit": commit,
                "fingerprint": str(finding.get("fingerprint", "")),
                "confidence": finding.get("confidence", "?"),
            }
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to scan")
    parser.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    args = parser.parse_args(argv)
    try:
        allowed = read_allowlist(args.allowlist)
        commits, report = scan_history(args.repo)
    except ScanError as error:
        print(f"secret scan could not run: {error}", file=sys.stderr)
        return 2
    found = findings(report)
    used: set[Allowed] = set()
    leaks = []
    for finding in found:
        accepting = next((entry for entry in allowed if entry.accepts(finding)), None)
        if accepting is None:
            leaks.append(finding)
        else:
            used.add(accepting)
    for finding in leaks:
        print(
            f"SECRET in commit {finding['commit']}: {finding['path']}:{finding['line']} "
            f"[{finding['rule']}, {finding['confidence']} confidence, fingerprint "
            f"{finding['fingerprint']}] {finding['description']}"
        )
    for entry in allowed:
        if entry not in used:
            print(f"note: allowlist entry {entry.rule} {entry.path} matched nothing: remove it")
    summary = report.get("metadata", {}).get("summary", {})
    print(
        f"secret scan of {args.repo}: {commits} commits, {summary.get('blobs_scanned', '?')} "
        f"file versions, {len(found)} findings ({len(found) - len(leaks)} allowed)"
    )
    if leaks:
        print(
            "A secret in any commit stays readable in every clone: revoke it first, then rewrite "
            "the history; a reviewed false alarm goes in security/secrets-allowlist.toml."
        )
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
