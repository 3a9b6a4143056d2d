"""A page to try the model: fill in a contact, see the probability and which version answered.

streamlit run bank_marketing/serving/try_it.py    (make try; the API at BANK_MARKETING_SERVE_URL)
"""

from __future__ import annotations

from typing import Any

import httpx
import streamlit as st

from bank_marketing.data.fields import FIELDS_BY_NAME
from bank_marketing.settings import Settings
from bank_marketing.training.features import DEFAULT_INPUTS

# Typical values of the UCI data, so the form opens on a plausible contact.
STARTING_VALUES: dict[str, Any] = {
    "age": 41, "balance": 450, "day": 15, "campaign": 2, "pdays": -1, "previous": 0,
    "duration": 180, "job": "technician", "marital": "married", "education": "secondary",
    "default": "no", "housing": "yes", "loan": "no", "contact": "cellular", "month": "may",
    "poutcome": "unknown",
}  # fmt: skip


def _input(name: str) -> Any:
    field = FIELDS_BY_NAME[name]
    label = f"{name}: {field.description}"
    if field.categories:
        options = list(field.categories)
        return st.selectbox(label, options, index=options.index(STARTING_VALUES[name]), key=name)
    return st.number_input(
        label,
        min_value=field.ge,
        max_value=field.le,
        value=STARTING_VALUES[name],
        step=1,
        key=name,
    )


def main() -> None:
    serve_url = Settings.from_env().serve_url
    st.set_page_config(page_title="bank-marketing: try the model")
    st.title("Will this client subscribe a term deposit?")
    st.caption(f"Scored by the champion model behind {serve_url}")
    with st.form("contact"):
        record = {name: _input(name) for name in DEFAULT_INPUTS}
        submitted = st.form_submit_button("Score")
    if not submitted:
        return
    try:
        response = httpx.post(f"{serve_url}/predict", json=record, timeout=10)
    except httpx.HTTPError as error:
        st.error(f"The prediction service at {serve_url} did not answer: {error}")
        return
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code != 200:
        st.error(f"The service refused the request ({response.status_code}): {body.get('detail')}")
        for error in body.get("errors", []):
            st.write(f"- {error['field']}: {error['message']}")
        return
    prediction = body["predictions"][0]
    st.metric("Probability of subscribing", f"{prediction['probability']:.1%}")
    verdict = "likely to subscribe" if prediction["subscribed"] else "unlikely to subscribe"
    st.success(f"{verdict.capitalize()} (model version {body['model_version']})")


main()
