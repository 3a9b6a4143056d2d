"""The landing location: monthly files named by their month, cut from the history and read back."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bank_marketing.cli import main
from bank_marketing.data import landing
from bank_marketing.data.fields import COLUMNS, UNKNOWN_ALLOWED
from bank_marketing.data.landing import (
    LandingError,
    cut_months,
    landed_files,
    month_in_name,
    read_landed,
    sha256,
)
from bank_marketing.data.months import recover_months
from bank_marketing.data.source import LoadedContacts, SourceError, load_contacts
from bank_marketing.settings import Settings
from bank_marketing_tests import variants

VALID = "2008-05..2010-11"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def loaded(bank_full_path: Path, cache: Path) -> LoadedContacts:
    return load_contacts(str(bank_full_path), cache)


@pytest.fixture(scope="module")
def history(loaded: LoadedContacts) -> pd.DataFrame:
    """The whole history with each row's month, as the ``contacts`` asset has it."""
    return loaded.frame.assign(contact_month=recover_months(loaded.frame["month"]))


@pytest.fixture
def load_once(
    monkeypatch: pytest.MonkeyPatch, bank_full_path: Path, loaded: LoadedContacts
) -> None:
    """``cut_months`` gets the real file's contacts as read once for the module (a second read
    takes a second or two, and reading is test_source.py's subject); other sources are read."""
    read = landing.load_contacts

    def load(source: str, cache_dir: Path) -> LoadedContacts:
        return loaded if source == str(bank_full_path) else read(source, cache_dir)

    monkeypatch.setattr(landing, "load_contacts", load)


@pytest.fixture(scope="module")
def landed(
    bank_full_path: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Every month of the history cut once (reading the real file), by ``YYYY-MM``."""
    folder = tmp_path_factory.mktemp("landing")
    written = cut_months(str(bank_full_path), cache, folder, "2008-05", "2010-11")
    return {str(month_in_name(path))[:7]: path for path in written}


def month_rows(history: pd.DataFrame, month: str) -> pd.DataFrame:
    return history[history["contact_month"] == pd.Timestamp(f"{month}-01")]


# --- names, digests, the folder -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "month"),
    [
        ("contacts-2009-01.csv", "2009-01-01"),
        ("2009-01.csv", "2009-01-01"),
        ("bank-2009-01.zip", "2009-01-01"),
        ("contacts-2010-11-resent.csv", "2010-11-01"),
        ("2009-02-then-2009-03.csv", "2009-02-01"),  # the first YYYY-MM counts
        ("extract_2031-12", "2031-12-01"),  # a month, if not one of the data's
        ("contacts.csv", None),
        ("2009-13.csv", None),
        ("2009-00.csv", None),
        ("contacts-2009_01.csv", None),
        ("contacts-09-01.csv", None),
        ("contacts-2009-1.csv", None),
    ],
)
def test_month_in_name(name: str, month: str | None) -> None:
    expected = None if month is None else pd.Timestamp(month)
    assert month_in_name(Path("/landing") / name) == expected


def test_only_the_file_name_gives_the_month() -> None:
    assert month_in_name(Path("/landing/2009-01/contacts.csv")) is None


def test_sha256_is_the_digest_of_the_bytes(tmp_path: Path) -> None:
    content = os.urandom(3 * (1 << 20) + 17)  # more than one chunk
    path = tmp_path / "contacts-2009-01.csv"
    path.write_bytes(content)
    assert sha256(path) == hashlib.sha256(content).hexdigest()


def test_landed_files_are_the_visible_regular_files_by_name(tmp_path: Path) -> None:
    for name in ("contacts-2009-02.csv", "contacts-2009-01.csv", "readme.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".contacts-2009-03.csv.partial").write_text("half a file")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "2009-04.csv").mkdir()
    assert [p.name for p in landed_files(tmp_path)] == [
        "contacts-2009-01.csv",
        "contacts-2009-02.csv",
        "readme.txt",
    ]
    assert landed_files(tmp_path / "absent") == []
    assert landed_files(tmp_path / "readme.txt") == []


def test_landing_dir_is_configured_and_prepared(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert Settings.from_env({"BANK_MARKETING_HOME": str(home)}).landing_dir == home / "landing"
    settings = Settings.from_env(
        {"BANK_MARKETING_HOME": str(home), "BANK_MARKETING_LANDING": str(tmp_path / "drop")}
    )
    assert settings.landing_dir == tmp_path / "drop"
    settings.prepare()
    assert (tmp_path / "drop").is_dir()


# --- cutting months and reading them back -----------------------------------------------------


def test_every_month_with_calls_is_cut_into_its_own_file(
    landed: dict[str, Path], history: pd.DataFrame
) -> None:
    assert len(landed) == 30 and "2008-09" not in landed
    assert {path.name for path in landed.values()} == {f"contacts-{m}.csv" for m in landed}
    folder = landed["2008-05"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in landed.values())
    lines = {m: path.read_text().count("\n") - 1 for m, path in landed.items()}
    assert sum(lines.values()) == len(history) == 45_211
    assert lines["2008-05"] == 7_957 and lines["2010-11"] == 75


def test_a_cut_file_is_in_bank_full_form(landed: dict[str, Path]) -> None:
    header, first = landed["2008-05"].read_text().splitlines()[:2]
    assert header == ";".join(f'"{c}"' for c in COLUMNS)
    assert first == (
        '58;"management";"married";"tertiary";"no";2143;"yes";"no";"unknown";5;"may";261;1;-1;0;'
        '"unknown";"no"'
    )


@pytest.mark.parametrize("month", ["2008-05", "2008-10", "2009-01", "2010-02", "2010-11"])
def test_round_trip_gives_the_months_rows_of_the_history(
    month: str, landed: dict[str, Path], history: pd.DataFrame, cache: Path
) -> None:
    path = landed[month]
    read = read_landed(path, cache)
    expected = month_rows(history, month)
    assert read.month == pd.Timestamp(f"{month}-01")
    assert read.path == path and read.form == "bank-full.csv"
    assert read.sha256 == sha256(path)
    assert list(read.frame.columns) == [*COLUMNS, "contact_month"]
    # The index is the line in the landed file (the header is line 1), not in the history.
    assert read.frame.index.name == "line"
    assert list(read.frame.index) == list(range(2, len(expected) + 2))
    pd.testing.assert_frame_equal(
        read.frame.reset_index(drop=True), expected.reset_index(drop=True)
    )


def test_every_month_round_trips(
    landed: dict[str, Path], history: pd.DataFrame, cache: Path
) -> None:
    frames = [read_landed(path, cache).frame for path in landed.values()]
    pd.testing.assert_frame_equal(
        pd.concat(frames).reset_index(drop=True), history.reset_index(drop=True)
    )


def _flat_form(cut: Path) -> bytes:
    """UCI's data.csv form of a cut file: ',', day_of_week for day, empty fields for 'unknown'."""
    rows = list(csv.reader(io.StringIO(cut.read_text()), delimiter=";"))
    header = ["day_of_week" if name == "day" else name for name in rows[0]]
    blank = [rows[0].index(c) for c in UNKNOWN_ALLOWED]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows[1:]:
        writer.writerow(["" if i in blank and v == "unknown" else v for i, v in enumerate(row)])
    return out.getvalue().encode()


def test_the_flat_data_csv_form_and_the_zip_read_to_the_same_frame(
    landed: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    cut = landed["2009-01"]
    reference = read_landed(cut, cache).frame
    flat = tmp_path / "2009-01.csv"
    flat.write_bytes(_flat_form(cut))
    text = flat.read_text()
    assert text.startswith("age,job,") and ",day_of_week," in text and ",," in text
    read = read_landed(flat, cache)
    assert read.form == "data.csv"
    pd.testing.assert_frame_equal(read.frame, reference)
    archive = tmp_path / "bank-2009-01.zip"
    archive.write_bytes(variants.nested_zip(cut.read_bytes()))
    read = read_landed(archive, cache)
    assert read.sha256 == sha256(archive)
    pd.testing.assert_frame_equal(read.frame, reference)


@pytest.mark.usefixtures("load_once")
def test_a_month_without_calls_gets_no_file(
    bank_full_path: Path, cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "new" / "landing"  # created
    written = cut_months(str(bank_full_path), cache, folder, "2008-08", "2008-10")
    assert [p.name for p in written] == ["contacts-2008-08.csv", "contacts-2008-10.csv"]
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in written]
    assert cut_months(str(bank_full_path), cache, folder, "2008-09") == []


@pytest.mark.usefixtures("load_once")
def test_cutting_again_writes_the_same_bytes(
    bank_full_path: Path, cache: Path, tmp_path: Path, landed: dict[str, Path]
) -> None:
    (tmp_path / ".contacts-2010-11.csv.partial").write_text("left by a crash")
    (first,) = cut_months(str(bank_full_path), cache, tmp_path, "2010-11")
    digest = sha256(first)
    (again,) = cut_months(str(bank_full_path), cache, tmp_path, "2010-11", "2010-11")
    assert again == first == tmp_path / "contacts-2010-11.csv"
    assert sha256(again) == digest == sha256(landed["2010-11"])
    assert [p.name for p in tmp_path.iterdir()] == ["contacts-2010-11.csv"]


@pytest.mark.usefixtures("load_once")
def test_a_failed_write_leaves_the_landed_file_as_it_was(
    bank_full_path: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (landed,) = cut_months(str(bank_full_path), cache, tmp_path, "2010-11")
    before = landed.read_bytes()

    def disk_full(frame: pd.DataFrame, path: Path, **kwargs: object) -> None:
        Path(path).write_text("half a ")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cut_months(str(bank_full_path), cache, tmp_path, "2010-10", "2010-11")
    assert [p.name for p in tmp_path.iterdir()] == ["contacts-2010-11.csv"]
    assert landed.read_bytes() == before


@pytest.mark.parametrize(
    ("first", "through", "named"),
    [
        ("2008-04", None, "2008-04"),
        ("2010-12", None, "2010-12"),
        ("2010-06", "2011-01", "2011-01"),
        ("2009-13", None, "2009-13"),
        ("2009-1", None, "2009-1"),
        ("2009-03", "2009-01", "through 2009-01 is before the first month 2009-03"),
    ],
)
def test_months_outside_the_data_or_out_of_order_are_refused_before_reading(
    first: str, through: str | None, named: str, tmp_path: Path
) -> None:
    folder = tmp_path / "landing"
    # An absent source: a refusal that read it would be the loader's SourceError instead.
    with pytest.raises(LandingError) as raised:
        cut_months(str(tmp_path / "absent.csv"), tmp_path, folder, first, through)
    assert named in str(raised.value) and VALID in str(raised.value)
    assert not folder.exists()


# --- files that cannot be their month -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("contacts.csv", "contacts.csv names no month: expected YYYY-MM in the file name"),
        ("contacts-2009-13.csv", "contacts-2009-13.csv names no month"),
        ("contacts-2011-01.csv", "contacts-2011-01.csv names 2011-01, outside the data's months"),
        ("contacts-2008-04.csv", "contacts-2008-04.csv names 2008-04, outside the data's months"),
    ],
)
def test_a_name_without_a_month_of_the_data_is_refused_before_reading(
    name: str, said: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text("<html><body>not even contacts</body></html>")
    with pytest.raises(LandingError) as raised:
        read_landed(path, tmp_path)
    assert said in str(raised.value) and VALID in str(raised.value)


def test_a_narrower_range_is_named(landed: dict[str, Path], cache: Path) -> None:
    first, last = pd.Timestamp("2009-01-01"), pd.Timestamp("2009-12-01")
    with pytest.raises(LandingError, match=r"names 2008-05, outside .* 2009-01\.\.2009-12"):
        read_landed(landed["2008-05"], cache, first, last)
    assert read_landed(landed["2009-12"], cache, first, last).month == last


def test_rows_of_another_month_are_refused_naming_both(
    landed: dict[str, Path], history: pd.DataFrame, cache: Path, tmp_path: Path
) -> None:
    january = len(month_rows(history, "2009-01"))
    path = tmp_path / "contacts-2009-02.csv"
    path.write_bytes(landed["2009-01"].read_bytes())
    with pytest.raises(LandingError) as raised:
        read_landed(path, cache)
    message = str(raised.value)
    assert f"contacts-2009-02.csv names 2009-02 ('feb') but {january} of {january} rows" in message
    assert f"rows say 'jan' ({january})." in message and VALID in message


def test_a_few_rows_of_another_month_are_counted(
    landed: dict[str, Path], history: pd.DataFrame, cache: Path, tmp_path: Path
) -> None:
    february = landed["2009-02"].read_text().splitlines()
    march = landed["2009-03"].read_text().splitlines()
    path = tmp_path / "2009-02.csv"
    path.write_text("\n".join([*february, *march[1:4]]) + "\n")
    with pytest.raises(LandingError) as raised:
        read_landed(path, cache)
    rows = len(february) - 1
    assert f"but 3 of {rows + 3} rows are of another month" in str(raised.value)
    assert f"rows say 'feb' ({rows}), 'mar' (3)." in str(raised.value)


def _cut(content: bytes) -> bytes:
    return content[: int(len(content) * 0.6)]


def _cut_zip(content: bytes) -> bytes:
    """A zip of bank-full.csv cut short. (Cut, UCI's nested zip of a small month can still show
    the end record of its other member, bank-additional.zip, to the loader.)"""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("bank-full.csv", content)
    return _cut(archive.getvalue())


@pytest.mark.parametrize(
    ("name", "make", "said"),
    [
        ("contacts-2009-01.csv", _cut, "truncated"),
        ("contacts-2009-01.csv", lambda c: b"<!DOCTYPE html><html>Login</html>", "HTML page"),
        ("contacts-2009-01.csv", lambda c: c.replace(b";", b"\t"), "delimiter"),
        ("contacts-2009-01.csv", lambda c: c.splitlines(keepends=True)[0], "no contact records"),
        ("bank-2009-01.zip", _cut_zip, "not a complete zip"),
    ],
)
def test_an_unreadable_file_raises_the_loaders_error(
    name: str, make, said: str, landed: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(make(landed["2009-01"].read_bytes()))
    with pytest.raises(SourceError) as loader:
        load_contacts(str(path), tmp_path)
    with pytest.raises(SourceError) as raised:
        read_landed(path, tmp_path)
    assert type(raised.value) is SourceError
    assert str(raised.value) == str(loader.value)
    assert str(path) in str(raised.value) and said in str(raised.value)


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def land_env(tmp_path: Path, bank_full_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command's environment: a home and a landing location of their own; returns the latter."""
    landing = tmp_path / "drop"
    monkeypatch.setenv("BANK_MARKETING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(bank_full_path))
    monkeypatch.setenv("BANK_MARKETING_LANDING", str(landing))
    return landing


def test_land_writes_the_months_and_says_so(
    land_env: Path, history: pd.DataFrame, landed: dict[str, Path], capsys
) -> None:
    assert main(["land", "2008-08", "--through", "2008-10"]) == 0
    out = capsys.readouterr().out.splitlines()
    august, october = land_env / "contacts-2008-08.csv", land_env / "contacts-2008-10.csv"
    assert out == [
        f"landed {august} ({len(month_rows(history, '2008-08'))} contacts)",
        f"landed {october} ({len(month_rows(history, '2008-10'))} contacts)",
        f"2 file(s) in {land_env}",
    ]
    assert sorted(land_env.iterdir()) == [august, october]
    assert sha256(october) == sha256(landed["2008-10"])


@pytest.mark.usefixtures("load_once")
def test_land_defaults_to_the_homes_landing_folder(
    land_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("BANK_MARKETING_LANDING")
    assert main(["land", "2010-11"]) == 0
    folder = tmp_path / "home" / "landing"
    assert [p.name for p in landed_files(folder)] == ["contacts-2010-11.csv"]
    assert capsys.readouterr().out.splitlines()[-1] == f"1 file(s) in {folder}"


@pytest.mark.parametrize(
    "argv",
    [
        ["land", "2011-01"],
        ["land", "2008-04"],
        ["land", "2009-13"],
        ["land", "january"],
        ["land", "2009-01", "--through", "2010-12"],
        ["land", "2009-03", "--through", "2009-01"],
    ],
)
def test_land_refuses_bad_months_with_2(argv: list[str], land_env: Path, capsys) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and VALID in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert landed_files(land_env) == []


def test_land_reports_an_unreadable_source_with_1(
    land_env: Path, tmp_path: Path, bank_full_bytes: bytes, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(tmp_path / "absent.csv"))
    assert main(["land", "2009-01"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'absent.csv'}: does not exist")
    shuffled = tmp_path / "bank-full.csv"
    shuffled.write_bytes(variants.shuffled(bank_full_bytes))
    monkeypatch.setenv("BANK_MARKETING_SOURCE", str(shuffled))
    assert main(["land", "2009-01"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "date order" in err and "Traceback" not in err
    assert landed_files(land_env) == []


def test_land_does_not_import_dagster(land_env: Path) -> None:
    code = (
        "import sys\n"
        "from bank_marketing.cli import main\n"
        "status = main(['land', '2010-11'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'mlflow', 'ray'})\n"
        "print(status, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
    assert [p.name for p in landed_files(land_env)] == ["contacts-2010-11.csv"]
