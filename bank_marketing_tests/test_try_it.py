"""The try-it page, driven with Streamlit's AppTest against the real API over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from streamlit.testing.v1 import AppTest

from bank_marketing.serving.app import create_app
from bank_marketing.serving.model import ModelState
from bank_marketing.training.features import DEFAULT_INPUTS
from bank_marketing_tests.conftest import free_port

PAGE = Path(__file__).parents[1] / "bank_marketing" / "serving" / "try_it.py"


@pytest.fixture(scope="module")
def api(state: ModelState) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def _page(url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("BANK_MARKETING_SERVE_URL", url)
    return AppTest.from_file(str(PAGE), default_timeout=30).run()


def test_the_form_has_bounded_inputs_and_dropdowns(api: str, monkeypatch) -> None:
    page = _page(api, monkeypatch)
    assert not page.exception
    assert {box.key for box in page.selectbox} == {"job", "housing", "contact", "month", "poutcome"}
    assert {number.key for number in page.number_input} == {
        "age", "balance", "day", "campaign", "pdays", "previous"
    }  # fmt: skip
    assert page.number_input(key="day").min == 1 and page.number_input(key="day").max == 31
    assert len(page.selectbox) + len(page.number_input) == len(DEFAULT_INPUTS)


def test_scoring_shows_the_probability_and_the_version(
    api: str,
    state: ModelState,
    monkeypatch,
) -> None:
    page = _page(api, monkeypatch)
    page.selectbox(key="poutcome").set_value("success")
    page.number_input(key="age").set_value(67)
    page.button[0].click().run()
    assert not page.exception and not page.error
    expected = httpx.post(
        f"{api}/predict",
        json={b.key: b.value for b in page.selectbox} | {n.key: n.value for n in page.number_input},
    ).json()["predictions"][0]["probability"]
    assert page.metric[0].value == f"{expected:.1%}"
    assert f"model version {state.model.version}" in page.success[0].value


def test_an_unreachable_service_is_reported(monkeypatch) -> None:
    page = _page("http://127.0.0.1:9", monkeypatch)
    page.button[0].click().run()
    assert "did not answer" in page.error[0].value
