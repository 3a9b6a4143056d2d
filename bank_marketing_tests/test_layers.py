"""The layers' import contracts (import-linter, run by ``make lint``) hold, and really catch a
library that reaches into Dagster or the orchestration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bank_marketing_tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's contracts on the package in ``tree`` (its own pyproject.toml)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        # The copy, not the installed package, is what gets analysed.
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "bank_marketing", tmp_path / "bank_marketing", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_package(package_copy: Path) -> None:
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("training/features.py", "import dagster", "bank_marketing.training.features -> dagster"),
        (
            "serving/app.py",
            "from bank_marketing.orchestration import sensors",
            "bank_marketing.serving.app -> bank_marketing.orchestration.sensors",
        ),
        (
            "data/source.py",
            "from bank_marketing.training import features",
            "bank_marketing.data.source -> bank_marketing.training.features",
        ),
    ],
)
def test_a_deliberate_violation_breaks_a_contract(
    package_copy: Path, module: str, line: str, broken: str
) -> None:
    path = package_copy / "bank_marketing" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert broken in result.stdout, result.stdout


def test_the_readme_layout_table_agrees_with_the_tree() -> None:
    """Every path the table names exists, and every part of the package is in the table."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = {row.split("`")[1].rstrip("/") for row in table.splitlines() if row.startswith("| `")}
    missing = sorted(path for path in named if not (REPO / path).exists())
    assert not missing, f"the README's layout table names paths that do not exist: {missing}"
    parts = {
        f"bank_marketing/{entry.name}"
        for entry in (REPO / "bank_marketing").iterdir()
        if entry.name != "__init__.py"
        and not entry.name.startswith((".", "__pycache__"))
        and (entry.is_dir() or entry.suffix == ".py")
    }
    unnamed = sorted(parts - named)
    assert not unnamed, f"parts of the package missing from the README's layout table: {unnamed}"
