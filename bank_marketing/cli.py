"""The ``bank-marketing`` command: run the system on the embedded defaults."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bank_marketing.orchestration.console import Console, quiet_console
from bank_marketing.settings import Settings

# Twelve months as of 2009-06 hold both the 2008 campaigns and the start of the 2009 rise.
DEFAULT_AS_OF = "2009-06"
# How a full disk reads from each store under the home: files say ENOSPC, SQLite (the Dagster
# instance, MLflow's and the monitoring database) "database or disk is full", or "disk I/O error"
# when it cannot grow its journal. The last has other causes too, so it is named as it is.
NO_SPACE = ("No space left on device", "database or disk is full")
DISK_IO = "disk I/O error"


def build_parser() -> argparse.ArgumentParser:
    """The command line: its subcommands, their options and their help."""
    parser = argparse.ArgumentParser(
        prog="bank-marketing",
        description="Predict term-deposit subscriptions; keep the prediction good as data drifts.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="Ingest every month, train and promote a champion, and test it on the next month.",
        description="Read BANK_MARKETING_SOURCE into raw_contacts, validate and store each month "
        "of contacts, train the five candidates as of --as-of in parallel, promote a champion "
        "in the MLflow registry, and score it on the following month; all on the Dagster "
        "instance in DAGSTER_HOME.",
    )
    run.add_argument(
        "--months",
        nargs="*",
        metavar="YYYY-MM",
        help="Only these months (default: all 31, 2008-05 .. 2010-11).",
    )
    run.add_argument(
        "--as-of",
        default=DEFAULT_AS_OF,
        metavar="YYYY-MM",
        help=f"Train on the window ending with this month (default: {DEFAULT_AS_OF}).",
    )
    run.add_argument("--no-train", action="store_true", help="Stop after the data assets.")
    run.add_argument(
        "--no-serve",
        action="store_true",
        help="Do not roll the prediction service over to the champion at the end.",
    )
    deploy = commands.add_parser(
        "deploy",
        help="Roll the prediction service over to the champion (or a pinned version).",
        description="Materialize production_deployment: tell the Ray Serve application at "
        "RAY_DASHBOARD_ADDRESS (a local Ray head is started if none answers there) which "
        "registered version to serve, wait until BANK_MARKETING_SERVE_URL answers with it, and "
        "score one example contact through it.",
    )
    deploy.add_argument(
        "--version", metavar="N", help="Serve this registered version instead of the champion."
    )
    replay = commands.add_parser(
        "replay",
        help="Replay history month by month through the closed loop (what make run does).",
        description="Train a first champion as of --first-as-of, then for each later month: "
        "validate its contacts, score them (predictions), report drift against the champion's "
        "reference (drift_report), evaluate the sensors and run the retraining and rollover "
        "they ask for. Prints a table per month, writes a plot of monthly ROC AUC against a "
        "frozen model and a model retrained every month, and a summary line.",
    )
    replay.add_argument(
        "--first-as-of",
        default="2008-12",
        metavar="YYYY-MM",
        help="Month the first champion is trained as of (default: 2008-12).",
    )
    replay.add_argument(
        "--last", metavar="YYYY-MM", help="Last month to replay (default: 2010-11)."
    )
    replay.add_argument(
        "--no-serve", action="store_true", help="Do not start or roll over the prediction service."
    )
    replay.add_argument(
        "--no-baselines",
        action="store_true",
        help="Skip the baselines (the frozen first champion, a round every month, the best "
        "fixed schedule) and the plot.",
    )
    land = commands.add_parser(
        "land",
        help="Cut months of the UCI history into the landing location, as monthly extracts.",
        description="Write each month from YYYY-MM through --through (default: that month alone) "
        "of BANK_MARKETING_SOURCE as contacts-YYYY-MM.csv in BANK_MARKETING_LANDING (default: "
        "the home's landing/), the way a bank's monthly extract arrives. Under the Dagster "
        "daemon, validate_landed_files turns each new file into that month's contacts run.",
    )
    land.add_argument("month", metavar="YYYY-MM", help="The first month to land.")
    land.add_argument("--through", metavar="YYYY-MM", help="The last month to land.")
    live = commands.add_parser(
        "live",
        help="Run the loop under the Dagster daemon, landing one month every few seconds "
        "(what make live does).",
        description="Load the history up to --first-as-of and train a first champion (unless "
        "the instance has one), start the Dagster webserver and daemon on the embedded "
        "instance and a Ray head for the service, then land one month of the UCI history in "
        "the landing location every --every seconds. The daemon validates, scores, reports "
        "drift, retrains and rolls the service over by itself. Ctrl-C stops what it started.",
    )
    live.add_argument(
        "--first-as-of",
        default="2008-12",
        metavar="YYYY-MM",
        help="Month the first champion is trained as of (default: 2008-12).",
    )
    live.add_argument(
        "--every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="Seconds between two landed months (default: 60).",
    )
    live.add_argument(
        "--port", type=int, default=3000, help="Port of the Dagster UI (default: 3000)."
    )
    boot = commands.add_parser(
        "bootstrap",
        help="Load the history up to a first champion and land the months after it (what the "
        "compose stack does on its first start).",
        description="Unless the instance has a champion: read BANK_MARKETING_SOURCE into "
        "raw_contacts, validate the months up to --first-as-of and train a first champion, in "
        "this process, on the instance in DAGSTER_HOME. Then land the months after it through "
        "--through in the landing location, for the daemon to validate, score and monitor.",
    )
    boot.add_argument("--first-as-of", default="2008-12", metavar="YYYY-MM")
    boot.add_argument(
        "--through",
        metavar="YYYY-MM",
        help="Last month to land (default: none, only the history and the first champion).",
    )
    policies = commands.add_parser(
        "policies",
        help="Backtest retraining policies on the history: what each scores and what it costs.",
        description="Fit every family as of every month once (cached in the home's cache/ "
        "folder and reused by every policy), then replay each retraining policy month by month "
        "with the decision code of the retraining sensor and the promotion rule of "
        "champion_model: never, fixed schedules, the prediction-drift rule, each signal at a "
        "few thresholds, and the best two-signal combinations. Writes "
        "$BANK_MARKETING_HOME/reports/policies.csv (one row per policy), policy_months.csv and "
        "policies.png; chooses a policy on 2009, checks it on 2010 (held out) and names the "
        "default that follows.",
    )
    policies.add_argument(
        "--first", default="2009-01", metavar="YYYY-MM", help="First month scored (2009-01)."
    )
    policies.add_argument(
        "--last", default="2010-11", metavar="YYYY-MM", help="Last month scored (2010-11)."
    )
    policies.add_argument(
        "--jobs", type=int, default=2, help="Processes fitting the rounds (default: 2)."
    )
    commands.add_parser(
        "stop",
        help="Stop the Ray head on this machine at RAY_DASHBOARD_ADDRESS (the one `run`, "
        "`deploy` or `live` started), leaving any other Ray on the machine running.",
    )
    commands.add_parser(
        "init",
        help="Create the embedded-state folders and the Dagster instance in BANK_MARKETING_HOME.",
    )
    db = commands.add_parser(
        "db",
        help="The monitoring database's schema: upgrade it, or show its revision.",
        description="The monitoring database (BANK_MARKETING_DB_URL) is upgraded by every "
        "service that opens it; these commands do it by hand (the compose stack's one-shot "
        "service `migrate` runs `db upgrade` before the services start).",
    )
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser(
        "upgrade",
        help="Bring the monitoring database to the newest schema revision.",
        description="Apply the schema migrations the database lacks, in one transaction. Tables "
        "made before migrations are recognized and stamped at their revision first; tables that "
        "match no revision are refused, naming what differs.",
    )
    db_current = db_commands.add_parser(
        "current", help="Show the monitoring database's schema revision and the newest one."
    )
    for command in (db_upgrade, db_current):
        command.add_argument(
            "--schema",
            metavar="NAME",
            help="Database schema of the tables (default: monitoring on PostgreSQL, none on "
            "SQLite).",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        return _command(settings, args)
    except Exception as error:
        said = disk_full_error(error)
        if said is None:
            raise
        print(f"error: {disk_full_message(said, settings.home)}", file=sys.stderr, flush=True)
        return 1


def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "init":
        settings.prepare()
        print(f"BANK_MARKETING_HOME={settings.home}\nDAGSTER_HOME={settings.dagster_home}")
        return 0
    if args.command == "bootstrap":
        # The compose stack's one-shot service: its library output belongs in `docker logs`.
        return _bootstrap(settings, args)
    if args.command == "land":
        return _land(settings, args.month, args.through)
    if args.command == "db":
        return _db(settings, args)
    if args.command == "stop":
        return _stop(settings)
    # The commands that drive Dagster, MLflow and Ray: the terminal shows their progress and
    # results, and what the libraries log or print goes to a file in the home.
    with quiet_console(settings.logs_dir, args.command) as terminal:
        console = HomeConsole(terminal.out, terminal.err, settings.home)
        if args.command == "live":
            return _live(settings, args, console)
        if args.command == "run":
            as_of = None if args.no_train else args.as_of
            return _run(
                settings, console, args.months, as_of, serve=not (args.no_train or args.no_serve)
            )
        if args.command == "replay":
            return _replay(settings, args, console)
        if args.command == "policies":
            return _policies(settings, args, console)
        if args.command == "deploy":
            _environment(settings)
            import dagster as dg

            from bank_marketing.orchestration.definitions import build_definitions

            with dg.DagsterInstance.get() as instance:
                return _deploy(build_definitions(settings), instance, args.version, console)
    return 2


def _stop(settings: Settings) -> int:
    from bank_marketing.serving.rollout import ServeCluster

    cluster = ServeCluster(settings.ray_dashboard_url, settings.serve_url, "")
    if not cluster.is_local():
        print(
            f"error: the Ray dashboard {settings.ray_dashboard_url} is not on this machine; "
            f"nothing is stopped",
            file=sys.stderr,
        )
        return 1
    stopped = cluster.stop_local()
    if not stopped:
        print(f"no Ray head of this machine has its dashboard at {settings.ray_dashboard_url}")
        return 0
    print(f"stopped the Ray head at {settings.ray_dashboard_url} ({stopped} processes)")
    return 0


def disk_full_message(text: str, home: Path) -> str | None:
    """``text`` (an error) told as the full disk it says, naming the home and its free space;
    None when it says nothing of a full disk."""
    full = any(words in text for words in NO_SPACE)
    if not full and DISK_IO not in text:
        return None
    free = free_mb(home)
    # SQLite's "disk I/O error" has other causes: it is a full disk when no space is left.
    said = (
        "no space left"
        if full or free == 0
        else "a disk I/O error (a full disk is the usual cause)"
    )
    return f"{said} under BANK_MARKETING_HOME={home} ({free:,} MB free): {text}"


def free_mb(path: Path) -> int:
    """Free space, in MB, on the filesystem that holds ``path`` (or would, once created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free // 2**20


def disk_full_error(error: BaseException) -> str | None:
    """The first error of ``error``'s chain (its causes and contexts) that tells of a full disk,
    in one line as ``Type: message``; None when none does."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        text = f"{type(link).__name__}: {(str(link).strip().splitlines() or [''])[0]}"
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return text if NO_SPACE[0] in text else f"{text} ({NO_SPACE[0]})"
        if any(words in text for words in (*NO_SPACE, DISK_IO)):
            return text
        link = link.__cause__ or link.__context__
    return None


@dataclass(frozen=True)
class HomeConsole(Console):
    """The console of a command on ``home``: an error that tells of a full disk (a run's
    failure, from its event log) names the home and its free space."""

    home: Path

    def error(self, text: str) -> None:
        super().error(disk_full_message(text, self.home) or text)


def _live(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    _environment(settings)
    from bank_marketing.orchestration.live import LiveError, live
    from bank_marketing.orchestration.partitions import monthly_partitions

    first = f"{args.first_as_of}-01"
    keys = monthly_partitions.get_partition_keys()
    if first not in keys or first == keys[-1] or args.every < 0:
        console.error(
            f"--first-as-of {args.first_as_of} must be a month of the data before its "
            f"last, and --every at least 0"
        )
        return 2
    try:
        live(
            settings,
            first_as_of=first,
            every_seconds=args.every,
            webserver_port=args.port,
            say=console.say,
        )
    except LiveError as error:
        console.error(str(error))
        return 1
    except KeyboardInterrupt:
        console.say("stopped")
    return 0


def _policies(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """The policy backtest: fit (or read) the rounds, replay every policy, write the reports."""
    import math

    from tqdm import tqdm

    from bank_marketing.monitoring import backtest

    months = backtest.month_keys(args.first, args.last)
    if not months or months[0] < "2008-06" or months[-1] > "2010-11":
        console.error(
            f"policies: --first {args.first} .. --last {args.last} must name months of the data "
            "after its first (2008-06 .. 2010-11), the first not after the last"
        )
        return 2
    prepared = backtest.setup(settings.source, settings.cache_dir, settings.training_config)
    as_ofs = [backtest.previous_month(months[0]), *months[:-1]]

    def bar(description: str):
        def progress(items, total):
            return tqdm(items, total=total, desc=description, file=console.err, leave=True)

        return progress

    history = backtest.fit_history(
        prepared,
        as_ofs,
        inputs=settings.model_inputs,
        cache_dir=settings.policy_cache_dir,
        jobs=args.jobs,
        progress=bar(f"rounds as of {as_ofs[0]}..{as_ofs[-1]}"),
    )
    outcome = backtest.backtest(history, prepared.promotion, months, progress=bar("policies"))
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    csv = settings.reports_dir / "policies.csv"
    outcome.summaries.to_csv(csv, index=False, float_format="%.4f")
    outcome.months.to_csv(
        settings.reports_dir / "policy_months.csv", index=False, float_format="%.4f"
    )
    png = backtest.plot(outcome, settings.reports_dir / "policies.png")
    shown = outcome.summaries.sort_values("mean_roc_auc", ascending=False)
    from tabulate import tabulate

    console.say(
        tabulate(
            shown[
                [
                    "policy",
                    "retrains",
                    "retrains_2009",
                    "mean_roc_auc_2009",
                    "mean_roc_auc_2010",
                    "mean_roc_auc",
                    "auc_gain_per_retrain",
                ]
            ],
            headers="keys",
            showindex=False,
            floatfmt=".4f",
        )
    )
    rules = outcome.summaries.set_index("policy")["rule"]
    console.say(f"\nchosen on 2009: {outcome.choice.reason}")
    console.say(f"held out, 2010: {outcome.confirmation.reason}")
    console.say(f"default: {outcome.confirmation.default} ({rules[outcome.confirmation.default]})")
    for tracked in outcome.tracking:
        correlation = "-" if math.isnan(tracked.correlation) else f"{tracked.correlation:.2f}"
        console.say(
            f"CBPE against the realized ROC AUC, {tracked.policy}: mean absolute error "
            f"{tracked.mean_absolute_error:.4f}, correlation {correlation} "
            f"({tracked.months} months)"
        )
    console.say(f"wrote {csv}, {settings.reports_dir / 'policy_months.csv'} and {png}")
    return 0


def _bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    _environment(settings)
    from bank_marketing.data.landing import LandingError
    from bank_marketing.orchestration.live import LiveError, bootstrap
    from bank_marketing.orchestration.partitions import monthly_partitions

    keys = monthly_partitions.get_partition_keys()
    first = f"{args.first_as_of}-01"
    if first not in keys or (args.through and f"{args.through}-01" not in keys):
        print(
            f"error: --first-as-of {args.first_as_of} and --through {args.through} must be "
            f"months of the data ({keys[0][:7]}..{keys[-1][:7]})",
            file=sys.stderr,
        )
        return 2
    try:
        bootstrap(settings, first_as_of=first, through=args.through)
    except LandingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except LiveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _land(settings: Settings, first: str, through: str | None) -> int:
    """Cut months of the history into the landing location: 2 for bad months, 1 for the source."""
    from bank_marketing.data.landing import LandingError, cut_months
    from bank_marketing.data.months import MonthOrderError
    from bank_marketing.data.source import SourceError

    settings.prepare()
    try:
        written = cut_months(
            settings.source, settings.cache_dir, settings.landing_dir, first, through
        )
    except LandingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (SourceError, MonthOrderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        with path.open() as file:
            rows = sum(1 for _ in file) - 1  # the header; no field holds a line break
        print(f"landed {path} ({rows} contacts)")
    print(f"{len(written)} file(s) in {settings.landing_dir}")
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    """``db upgrade`` and ``db current``: 1 when the database cannot be reached or upgraded."""
    from pathlib import Path

    import sqlalchemy as sa

    from bank_marketing.monitoring import migrations, store

    engine = store.engine_for(settings.db_url, args.schema)
    schema = migrations.schema_of(engine)
    where = engine.url.render_as_string(hide_password=True)
    where += f" (schema {schema})" if schema else ""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    head = migrations.head()
    try:
        if args.db_command == "upgrade":
            done = migrations.upgrade(engine)
            if done.before == done.after:
                print(f"{where}: at {done.after} (head), nothing to do")
            elif done.adopted == done.after:
                print(f"{where}: tables made before migrations, stamped at {done.after} (head)")
            elif done.adopted:
                print(
                    f"{where}: tables made before migrations, stamped at {done.adopted}; "
                    f"upgraded {done.adopted} -> {done.after} (head)"
                )
            else:
                print(f"{where}: upgraded {done.before or 'no tables'} -> {done.after} (head)")
            return 0
        revision = migrations.current(engine)
        if revision == head:
            print(f"{where}: {revision} (head)")
        elif revision is not None:
            print(f"{where}: {revision}; head is {head} (`bank-marketing db upgrade` applies it)")
        elif (recognized := migrations.recognize(engine)) is not None:
            print(
                f"{where}: none; its tables were made before migrations, at {recognized} "
                f"(`bank-marketing db upgrade` adopts them); head is {head}"
            )
        else:
            print(f"{where}: none, no monitoring tables yet; head is {head}")
        return 0
    except migrations.MigrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as error:
        print(
            f"error: cannot reach the monitoring database at {where}: {error.orig}",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _environment(settings: Settings) -> None:
    settings.prepare()
    # MLflow's INFO lines (requirements export, store migrations) drown the command's own output,
    # and so do its download progress bars (one per model loaded) under the command's own bar.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Every model's conda.yaml lists pip without a version: uv environments have no pip, and the
    # models are served from this lock, not from conda. One warning per model says only that.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The Dagster UI (make dev) reads the same instance through DAGSTER_HOME.
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)


def _run(
    settings: Settings,
    console: Console,
    months: list[str] | None,
    as_of: str | None,
    serve: bool,
) -> int:
    _environment(settings)

    import dagster as dg

    from bank_marketing.orchestration.definitions import build_definitions
    from bank_marketing.orchestration.partitions import monthly_partitions
    from bank_marketing.orchestration.runner import backfill_contacts, failure_message, run_ingest

    defs = build_definitions(settings)
    keys = monthly_partitions.get_partition_keys()
    if months:
        wanted = {f"{m}-01" for m in months}
        unknown = sorted(wanted - set(keys))
        if unknown:
            console.error(f"no such month(s): {', '.join(k[:7] for k in unknown)}")
            return 2
        keys = [k for k in keys if k in wanted]
    if as_of is not None and f"{as_of}-01" not in monthly_partitions.get_partition_keys():
        console.error(f"--as-of {as_of} is not a month of the data")
        return 2

    with dg.DagsterInstance.get() as instance:
        console.say(f"Reading {settings.source} (Dagster instance: {settings.dagster_home})")
        ingest = run_ingest(defs, instance)
        if not ingest.success:
            console.error(str(failure_message(ingest)))
            return 1
        rows = ingest.asset_materializations_for_node("raw_contacts")[0].metadata
        console.say(
            f"raw_contacts: {rows['dagster/row_count'].value} rows, sha256 {rows['sha256'].value}"
        )

        def progress(outcome):
            state = "ok" if outcome.success else "FAILED"
            console.say(f"  contacts {outcome.partition_key[:7]}: {state}")

        outcomes = backfill_contacts(defs, instance, keys, on_month=progress)
        _print_months(outcomes, console)
        failed = [o for o in outcomes if not o.success]
        for o in failed:
            console.error(f"{o.partition_key[:7]}: {o.error}")
        if failed:
            return 1
        if as_of is None:
            return 0
        trained = _train(defs, instance, f"{as_of}-01", console)
        if trained != 0 or not serve:
            return trained
        return _deploy(defs, instance, None, console)


def _print_months(outcomes: list, console: Console) -> None:
    from tabulate import tabulate

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
    console.say(tabulate(table, headers=["month", "rows", "rejected", "subscribed", "status"]))
    stored = sum(1 for o in outcomes if o.success)
    total = sum(o.rows or 0 for o in outcomes)
    console.say(f"{stored} of {len(outcomes)} months stored, {total} contacts.")


def _train(defs, instance, as_of: str, console: Console) -> int:
    from tabulate import tabulate

    from bank_marketing.orchestration.runner import failure_message, run_evaluation, run_training

    console.say(f"Training five candidates as of {as_of[:7]} (parallel processes)...")
    result = run_training(instance, as_of)
    meta = {
        event.asset_key.to_user_string(): {
            key: value.value
            for key, value in event.event_specific_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    candidates = [
        (
            name.removesuffix("_candidate"),
            m["model_version"],
            f"{m['validation_roc_auc']:.4f}",
            f"{m['validation_pr_auc']:.4f}",
            m["train_rows"],
            m["fit_seconds"],
        )
        for name, m in sorted(meta.items())
        if name.endswith("_candidate")
    ]
    if candidates:
        headers = ["family", "version", "val ROC AUC", "val PR AUC", "train rows", "fit s"]
        console.say(tabulate(candidates, headers=headers))
    if not result.success:
        console.error(f"training as of {as_of[:7]}: {failure_message(result)}")
        return 1
    champion = meta["champion_model"]
    console.say(f"champion: v{champion['champion_version']} ({champion['decision']})")
    evaluation = run_evaluation(defs, instance, as_of)
    if not evaluation.success:
        console.error(f"test evaluation: {failure_message(evaluation)}")
        return 1
    test = evaluation.asset_materializations_for_node("champion_evaluation")[0].metadata
    if "skipped" in test:
        console.say(f"test evaluation skipped: {test['skipped'].value}")
    else:
        console.say(
            f"test on {test['test_month'].value} ({test['rows'].value} contacts): "
            f"ROC AUC {test['test_roc_auc'].value:.4f}, PR AUC {test['test_pr_auc'].value:.4f}"
        )
    return 0


def _replay(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    _environment(settings)
    import dagster as dg
    from tqdm import tqdm

    from bank_marketing.orchestration.definitions import build_definitions
    from bank_marketing.orchestration.partitions import monthly_partitions
    from bank_marketing.orchestration.replay import ReplayError, month_keys, replay

    keys = monthly_partitions.get_partition_keys()
    first, last = f"{args.first_as_of}-01", f"{args.last}-01" if args.last else keys[-1]
    if first not in keys or last not in keys or last <= first:
        console.error(
            f"--first-as-of {args.first_as_of} and --last {args.last} must be months of "
            f"the data, the first before the last"
        )
        return 2
    defs = build_definitions(settings)
    console.say(
        f"Replaying {first[:7]} .. {last[:7]} on {settings.dagster_home} ({settings.source})"
    )
    bar = tqdm(
        total=len(month_keys(first, last)), unit="month", dynamic_ncols=True, file=console.err
    )
    with dg.DagsterInstance.get() as instance:
        try:
            result = replay(
                defs,
                instance,
                first_as_of=first,
                last_month=last,
                serve=not args.no_serve,
                on_step=lambda text: bar.set_description(text[:60]),
                on_month=lambda _: bar.update(1),
            )
        except ReplayError as error:
            bar.close()
            console.error(str(error))
            return 1
    bar.close()
    status = _report(settings, result, console, baselines=not args.no_baselines)
    if status != 0 or args.no_serve:
        return status
    console.say(
        f"serving v{result.months[-1].champion_after} at {settings.serve_url} "
        f"(API docs at {settings.serve_url}/docs; stop it with `make stop`)"
    )
    return _score_example(settings.serve_url, console)


def _report(settings: Settings, result, console: Console, *, baselines: bool) -> int:
    from bank_marketing.orchestration import replay_report

    if baselines:
        console.say(
            "Scoring the baselines (the frozen first champion, a round every month, the best "
            "fixed schedule; the rounds are cached with the policy backtest's)..."
        )
    scores = replay_report.baselines(settings, result) if baselines else {}
    months = replay_report.frame(result, scores)
    console.say(replay_report.table(months))
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    csv = settings.reports_dir / "replay.csv"
    months.to_csv(csv, index=False)
    console.say(f"table: {csv}")
    if scores:
        png = replay_report.plot(months, scores, settings.reports_dir / "replay_roc_auc.png")
        console.say(f"plot: {png}")
    from tabulate import tabulate

    console.say(
        tabulate(replay_report.by_year(months), headers="keys", showindex=False, floatfmt=".4f")
    )
    console.say(replay_report.summary(result, scores))
    return 0


def _deploy(defs, instance, version: str | None, console: Console) -> int:
    from bank_marketing.orchestration.runner import failure_message, run_deployment

    target = f"v{version}" if version else "the champion"
    console.say(f"Rolling the prediction service over to {target} (Ray Serve)...")
    result = run_deployment(defs, instance, version)
    if not result.success:
        console.error(f"production_deployment: {failure_message(result)}")
        return 1
    live = {
        key: value.value
        for key, value in result.asset_materializations_for_node("production_deployment")[
            0
        ].metadata.items()
    }
    url = live["serve_url"]
    console.say(
        f"serving v{live['live_version']} ({live['family']}, window {live['training_window']}) "
        f"at {url} on {live['running_replicas']} replicas, switched in "
        f"{live['rollout_seconds']} s; API docs at {url}/docs; stop it with `bank-marketing stop`"
    )
    return _score_example(url, console)


def _score_example(url: str, console: Console) -> int:
    """POST the example contact to the service and print its answer."""
    import httpx

    from bank_marketing.serving.contract import EXAMPLE_RECORD

    try:
        response = httpx.post(f"{url}/predict", json=EXAMPLE_RECORD, timeout=30)
    except httpx.HTTPError as error:
        console.error(f"scoring an example contact at {url}/predict: {error}")
        return 1
    if response.status_code != 200:
        console.error(f"{url}/predict answered {response.status_code}: {response.text}")
        return 1
    console.say(f"example contact: {json.dumps(EXAMPLE_RECORD)}")
    console.say(f"answer from POST {url}/predict: {response.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
