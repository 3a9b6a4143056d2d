"""Writing benchmark results: each script owns one ``## `` section of BENCHMARKS.md."""

from __future__ import annotations

import os
from pathlib import Path


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def replace_section(path: Path, section: str, after: str | None = None) -> None:
    """Put ``section`` (starting with its ``## `` heading line) in place of the same heading's.

    A section the file does not have yet goes right after the section headed ``after`` when
    there is one, else at the end.
    """
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading in text:
        start = text.index(heading)
        following = text.find("\n## ", start + len(heading))
        rest = "" if following == -1 else text[following + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    elif after is not None and after in text:
        following = text.find("\n## ", text.index(after) + len(after))
        if following == -1:
            text = text.rstrip("\n") + "\n\n" + section
        else:
            text = text[: following + 1] + section + "\n" + text[following + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
