"""make live's pieces that need no daemon: the processes it starts end with it, and its
commands refuse bad months before starting anything."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bank_marketing.cli import main
from bank_marketing.orchestration.live import background_process
from bank_marketing.settings import Settings


def test_a_background_process_and_its_children_end_with_the_block(tmp_path: Path) -> None:
    settings = Settings.from_env({"BANK_MARKETING_HOME": str(tmp_path / "home")})
    settings.prepare()
    said: list[str] = []
    # The command runs beside the interpreter (as dagster-daemon does in the environment): here a
    # Python that starts a child of its own, which must end with it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "sleeper")
    child = tmp_path / "child.pid"
    script = (
        "import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
        f"open({str(child)!r}, 'w').write(str(p.pid)); time.sleep(300)"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "executable", str(bin_dir / "python"))
        with background_process(
            "sleeper", ["-c", script], settings, tmp_path / "log", said.append
        ) as process:
            deadline = time.monotonic() + 30
            while not (child.exists() and child.read_text()) and time.monotonic() < deadline:
                time.sleep(0.1)
            pid = int(child.read_text())
            assert process.poll() is None
    assert process.poll() is not None
    assert _ended(pid), f"the child {pid} outlived its process group"
    assert said == [f"started sleeper (pid {process.pid})", "stopped sleeper"]


@pytest.mark.parametrize(
    "argv",
    [
        ["live", "--first-as-of", "2011-01"],
        ["live", "--first-as-of", "2010-11"],
        ["live", "--every", "-1"],
        ["bootstrap", "--first-as-of", "2007-12"],
        ["bootstrap", "--through", "2011-02"],
    ],
)
def test_live_and_bootstrap_refuse_months_outside_the_data(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(tmp_path / "absent.csv"))
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def _ended(pid: int, timeout_s: float = 10) -> bool:
    """Gone, or a zombie waiting for whoever adopted it to reap it."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = next(
                line for line in status.read_text().splitlines() if line.startswith("State")
            )
        except FileNotFoundError:
            return True
        if "zombie" in state:
            return True
        time.sleep(0.1)
    return False
