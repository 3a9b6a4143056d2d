"""The ``bank-marketing`` command: run the system on the embedded defaults."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bank_marketing.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bank-marketing",
        description="Predict term-deposit subscriptions; keep the prediction good as data drifts.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="Read the source and materialize every monthly contacts partition.",
        description="Read BANK_MARKETING_SOURCE into raw_contacts, then validate and store each "
        "month of contacts, on the Dagster instance in DAGSTER_HOME.",
    )
    run.add_argument(
        "--months",
        nargs="*",
        metavar="YYYY-MM",
        help="Only these months (default: all 31, 2008-05 .. 2010-11).",
    )
    commands.add_parser(
        "init",
        help="Create the embedded-state folders and the Dagster instance in BANK_MARKETING_HOME.",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "init":
        settings.prepare()
        print(f"BANK_MARKETING_HOME={settings.home}\nDAGSTER_HOME={settings.dagster_home}")
        return 0
    if args.command == "run":
        return _run(settings, args.months)
    return 2


def _run(settings: Settings, months: list[str] | None) -> int:
    settings.prepare()
    # The Dagster UI (make dev) reads the same instance through DAGSTER_HOME.
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)

    import dagster as dg
    from tabulate import tabulate

    from bank_marketing.definitions import build_definitions
    from bank_marketing.partitions import monthly_partitions
    from bank_marketing.runner import backfill_contacts, failure_message, run_ingest

    defs = build_definitions(settings)
    keys = monthly_partitions.get_partition_keys()
    if months:
        wanted = {f"{m}-01" for m in months}
        unknown = sorted(wanted - set(keys))
        if unknown:
            print(f"error: no such month(s): {', '.join(k[:7] for k in unknown)}", file=sys.stderr)
            return 2
        keys = [k for k in keys if k in wanted]

    with dg.DagsterInstance.get() as instance:
        print(f"Reading {settings.source} (Dagster instance: {settings.dagster_home})")
        ingest = run_ingest(defs, instance)
        if not ingest.success:
            print(f"error: {failure_message(ingest)}", file=sys.stderr)
            return 1
        rows = ingest.asset_materializations_for_node("raw_contacts")[0].metadata
        print(
            f"raw_contacts: {rows['dagster/row_count'].value} rows, sha256 {rows['sha256'].value}"
        )

        def progress(outcome):
            state = "ok" if outcome.success else "FAILED"
            print(f"  contacts {outcome.partition_key[:7]}: {state}", flush=True)

        outcomes = backfill_contacts(defs, instance, keys, on_month=progress)

    table = [
        (
            o.partition_key[:7],
            o.rows if o.success else "-",
            o.rejected if o.success else "-",
            f"{o.subscription_rate:.1%}" if o.success and o.rows else "-",
            "ok" if o.success else "failed",
        )
        for o in outcomes
    ]
    print(tabulate(table, headers=["month", "rows", "rejected", "subscribed", "status"]))
    failed = [o for o in outcomes if not o.success]
    total = sum(o.rows or 0 for o in outcomes)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} months stored, {total} contacts.")
    for o in failed:
        print(f"error: {o.partition_key[:7]}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
