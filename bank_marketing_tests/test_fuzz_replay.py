"""The fuzzer's requests without a server: a seed names the same bytes from one version to the next,
so a failing request named in a report (``--seed 19 --case i``) can be sent again."""

from __future__ import annotations

import hashlib

from bank_marketing.benchmarks.fuzz import Builder, Target, json_slots

# sha256 over the raw bytes of requests 0..1999 of seed 19 (the seed CI and RELIABILITY.md use).
SEED_19_FIRST_2000 = "c5f8fe7d89bdcf709bd8240699dc9de3a73a37f6367d7aca3b0a15a6486564ee"


def test_seed_19_sends_the_same_requests_as_before() -> None:
    builder = Builder(19, Target("127.0.0.1", 8000, "fuzz-test-token"))
    digest = hashlib.sha256()
    for index in range(2000):
        digest.update(builder.case(index).raw)
    assert digest.hexdigest() == SEED_19_FIRST_2000, (
        "the requests of seed 19 changed: a case named in a report no longer replays; "
        "if the change is meant, record the new digest here"
    )


def test_json_slots_visit_a_container_then_the_containers_below_it_last_first() -> None:
    inner = {"x": 1}
    listed = ["a", inner]
    body = {"records": listed, "age": 41}
    slots = [(id(container), key, child) for container, key, child in json_slots(body)]
    assert slots == [
        (id(body), "records", listed),
        (id(body), "age", 41),
        (id(listed), 0, "a"),
        (id(listed), 1, inner),
        (id(inner), "x", 1),
    ]
