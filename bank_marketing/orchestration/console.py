"""A quiet console for the ``bank-marketing`` commands: their own lines on the terminal, the
libraries' output in a log file.

Dagster, MLflow, Ray, Evidently and the rest talk on three channels, and only one of them is
Python's logging: MLflow prints "Registered model ..." lines straight to ``sys.stderr``, a
sensor's context logger has its own handler on ``sys.stderr``, and the training steps run in
subprocesses that write to the file descriptors they inherit. So while :func:`quiet_console` is
open, all three lead to the log file: the root logger gets a file handler (warnings go through
logging too), ``sys.stdout`` and ``sys.stderr`` point at the file, and so do file descriptors 1
and 2, which child processes inherit. The command writes what the user should read (progress,
results, errors) through the :class:`Console` it gets, which holds the terminal as it was.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Console:
    """Where a command writes for the user: the terminal as it was before the libraries ran."""

    out: TextIO
    err: TextIO

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        """An error the user must see, whatever the libraries' output is routed to."""
        self.out.flush()
        print(f"error: {text}", file=self.err, flush=True)


def log_path(logs_dir: Path, command: str, now: datetime | None = None) -> Path:
    """``<logs_dir>/<command>-<UTC time>.log``: one file per invocation, sorted by time."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return logs_dir / f"{command}-{stamp}.log"


@contextmanager
def quiet_console(logs_dir: Path, command: str) -> Iterator[Console]:
    """Route the libraries' output to a new log file in ``logs_dir`` until the block ends.

    On the way out the streams, descriptors and logging are put back, whether the block failed
    or not, so an exception's traceback reaches the terminal; the last line on stderr names the log.
    """
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = log_path(logs_dir, command)
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = _terminal(sys.stdout, 1), _terminal(sys.stderr, 2)
    saved_fds = (os.dup(1), os.dup(2))
    saved_streams = (sys.stdout, sys.stderr)
    root = logging.getLogger()
    saved_level = root.level
    with path.open("a", buffering=1, encoding="utf-8", errors="backslashreplace") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            sys.stdout = sys.stderr = log
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            logging.captureWarnings(True)
            yield Console(out=out, err=err)
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(saved_level)
            log.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
            for stream, original in ((out, saved_streams[0]), (err, saved_streams[1])):
                if stream is not original:
                    stream.close()
            # On stderr with the progress bar and the errors: stdout holds only the results.
            print(f"library output: {path}", file=sys.stderr, flush=True)


def _terminal(stream: TextIO, fd: int) -> TextIO:
    """The stream the user reads, kept apart from ``fd`` before ``fd`` is pointed at the log.

    A stream on another descriptor, or on none (pytest's capture), is used as it is.
    """
    try:
        on_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        on_fd = False
    if not on_fd:
        return stream
    return os.fdopen(
        os.dup(fd),
        "w",
        buffering=1,
        encoding=getattr(stream, "encoding", None) or "utf-8",
        errors=getattr(stream, "errors", None) or "backslashreplace",
    )
