"""The loader: every published form gives the same typed frame; every broken file a clear error."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bank_marketing.data.fields import COLUMNS, NUMERIC_COLUMNS
from bank_marketing.data.source import SourceError, load_contacts
from bank_marketing_tests import variants

BANK_FULL_SHA256 = "e003ab9ba07160dd9e7dc257e924f4961a6dfaed4a3c2c157c38621995b68c08"


@pytest.fixture(scope="module")
def reference(bank_full_path: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return load_contacts(str(bank_full_path), tmp_path_factory.mktemp("cache")).frame


def test_bank_full_is_typed_in_file_order(bank_full_path: Path, tmp_path: Path) -> None:
    loaded = load_contacts(str(bank_full_path), tmp_path)
    frame = loaded.frame
    assert loaded.rows == 45_211
    assert loaded.sha256 == BANK_FULL_SHA256
    assert loaded.form == "bank-full.csv"
    assert tuple(frame.columns) == COLUMNS
    assert all(frame[c].dtype == "int64" for c in NUMERIC_COLUMNS)
    assert all(frame[c].dtype == object for c in set(COLUMNS) - set(NUMERIC_COLUMNS))
    assert frame.index.name == "line"
    assert frame.index[0] == 2 and frame.index[-1] == 45_212
    assert frame.iloc[0].to_dict() == {
        "age": 58, "job": "management", "marital": "married", "education": "tertiary",
        "default": "no", "balance": 2143, "housing": "yes", "loan": "no", "contact": "unknown",
        "day": 5, "month": "may", "duration": 261, "campaign": 1, "pdays": -1, "previous": 0,
        "poutcome": "unknown", "y": "no",
    }  # fmt: skip


def test_nested_uci_archive_gives_the_same_frame(
    bank_full_bytes: bytes, reference: pd.DataFrame, tmp_path: Path
) -> None:
    archive = tmp_path / "bank+marketing.zip"
    archive.write_bytes(variants.nested_zip(bank_full_bytes))
    loaded = load_contacts(str(archive), tmp_path / "cache")
    pd.testing.assert_frame_equal(loaded.frame, reference)
    assert loaded.sha256 == BANK_FULL_SHA256
    assert loaded.source_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert loaded.location.endswith("bank+marketing.zip > bank.zip > bank-full.csv")


def test_flat_data_csv_gives_the_same_frame(
    bank_full_bytes: bytes, reference: pd.DataFrame, tmp_path: Path
) -> None:
    flat = tmp_path / "data.csv"
    flat.write_bytes(variants.flat_form(bank_full_bytes))
    assert b",," in flat.read_bytes()  # the flat form really has empty fields
    loaded = load_contacts(str(flat), tmp_path / "cache")
    assert loaded.form == "data.csv"
    pd.testing.assert_frame_equal(loaded.frame, reference)


class _Server:
    def __init__(self, routes: dict[str, tuple[str, bytes]]) -> None:
        self.routes = routes
        self.hits: list[str] = []

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                content_type, body = server.routes.get(self.path, ("text/plain", b""))
                self.send_response(200 if self.path in server.routes else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def http_server(bank_full_bytes: bytes) -> Iterator[tuple[str, _Server]]:
    """A local web server (loopback only) with the archive, the flat file and a proxy's page."""
    routes = {
        "/bank+marketing.zip": ("application/zip", variants.nested_zip(bank_full_bytes)),
        "/data.csv": ("text/csv", variants.flat_form(bank_full_bytes)),
        "/blocked.zip": ("text/html", b"<!DOCTYPE html><html><body>Access denied</body></html>"),
    }
    state = _Server(routes)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def test_url_downloads_once_into_the_cache(
    http_server: tuple[str, _Server], reference: pd.DataFrame, tmp_path: Path
) -> None:
    base, server = http_server
    cache = tmp_path / "downloads"
    for _ in range(2):
        loaded = load_contacts(f"{base}/bank+marketing.zip", cache)
        pd.testing.assert_frame_equal(loaded.frame, reference)
    assert server.hits == ["/bank+marketing.zip"]
    assert (cache / "bank+marketing.zip").is_file()
    assert not list(cache.glob(".*.part"))
    flat = load_contacts(f"{base}/data.csv", cache)
    pd.testing.assert_frame_equal(flat.frame, reference)


def test_html_answer_to_a_url_is_refused_and_not_cached(
    http_server: tuple[str, _Server], tmp_path: Path
) -> None:
    base, server = http_server
    cache = tmp_path / "downloads"
    for _ in range(2):
        with pytest.raises(SourceError, match="HTML page, not a CSV"):
            load_contacts(f"{base}/blocked.zip", cache)
    assert server.hits == ["/blocked.zip", "/blocked.zip"]  # retried, not served from cache
    assert not (cache / "blocked.zip").exists()


def test_unreachable_url_says_how_to_work_offline(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"download failed.*BANK_MARKETING_SOURCE"):
        load_contacts("http://127.0.0.1:9/bank+marketing.zip", tmp_path)
    assert not list(tmp_path.iterdir())


def _cut(content: bytes, fraction: float = 0.6) -> bytes:
    return content[: int(len(content) * fraction)]


def _header_edit(content: bytes, old: str, new: str) -> bytes:
    lines = variants.lines_of(content)
    lines[0] = lines[0].replace(old, new)
    return variants.join(lines)


def _drop_column(content: bytes, column: str) -> bytes:
    lines = variants.lines_of(content)
    index = lines[0].split(";").index(column)
    return variants.join(
        [";".join(f for i, f in enumerate(line.split(";")) if i != index) for line in lines]
    )


def _add_column(content: bytes) -> bytes:
    lines = variants.lines_of(content)
    return variants.join([lines[0] + ";score"] + [line + ";1" for line in lines[1:]])


BAD_FILES = {
    "html": (
        "bank-full.csv",
        lambda c: b"<html><head><title>Proxy</title></head><body>Login</body></html>",
        [r"HTML page"],
    ),
    "truncated csv": (
        "bank-full.csv",
        _cut,
        [r"fewer than 17 fields", r"line \d+", r"looks truncated"],
    ),
    "truncated zip": (
        "bank+marketing.zip",
        lambda c: _cut(variants.nested_zip(c)),
        [r"not a complete zip archive"],
    ),
    "wrong delimiter": (
        "bank-full.csv",
        lambda c: c.replace(b";", b"\t"),
        [r"line 1", r"does not split into columns", r"delimiter"],
    ),
    "missing column": (
        "bank-full.csv",
        lambda c: _drop_column(c, "balance"),
        [r"missing column\(s\) 'balance'"],
    ),
    "extra column": ("bank-full.csv", _add_column, [r"unexpected column\(s\) 'score'"]),
    "non-numeric age": (
        "bank-full.csv",
        lambda c: variants.set_field(c, "age", "forty", [7, 9]),
        [r"column 'age' must hold whole numbers", r"line 7: 'forty'", r"line 9: 'forty'"],
    ),
    "unknown month name": (
        "bank-full.csv",
        lambda c: variants.set_field(c, "month", "mai", [5]),
        [r"column 'month'", r"line 5: 'mai'"],
    ),
    "rows of another length": (
        "bank-full.csv",
        lambda c: variants.join([*variants.lines_of(c)[:10], "1;2;3", *variants.lines_of(c)[10:]]),
        [r"fewer than 17 fields \(line 11: 3\)", r"delimiter ';'"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gets_one_clear_message(case: str, bank_full_bytes: bytes, tmp_path: Path) -> None:
    name, make, patterns = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(make(bank_full_bytes))
    with pytest.raises(SourceError) as raised:
        load_contacts(str(path), tmp_path / "cache")
    message = str(raised.value)
    assert str(path) in message
    for pattern in patterns:
        assert pd.Series([message]).str.contains(pattern).all(), (pattern, message)


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bank-full.csv"
    with pytest.raises(SourceError, match=rf"{missing}: does not exist.*BANK_MARKETING_SOURCE"):
        load_contacts(str(missing), tmp_path)


def test_archive_without_the_csv_lists_its_members(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(SourceError, match=r"holds no bank-full.csv \(members: readme.txt\)"):
        load_contacts(str(path), tmp_path)
