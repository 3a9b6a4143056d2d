"""The data assets: the source file as one typed frame, and validated monthly ``contacts``."""

import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field

from bank_marketing.data.fields import COLUMNS
from bank_marketing.data.landing import LandingError, read_landed
from bank_marketing.data.months import FIRST_MONTH, LAST_MONTH, MonthOrderError, recover_months
from bank_marketing.data.quality import MonthValidation, validate_month
from bank_marketing.data.schemas import Contacts
from bank_marketing.data.source import SourceError
from bank_marketing.orchestration.assets.metadata import rounded
from bank_marketing.orchestration.partitions import monthly_partitions
from bank_marketing.orchestration.resources import DataSource, MonitoringDatabase

SAMPLE_ROWS = 10
# The input manager that reads raw_contacts if it was ever stored (resources.StoredOrNone).
RAW_IF_STORED = "raw_contacts_if_stored"

with warnings.catch_warnings():
    # dagster-pandera marks this beta; it is the integration's one entry point.
    warnings.simplefilter("ignore", dg.BetaWarning)
    ContactsType = pandera_schema_to_dagster_type(Contacts)
VALID_ROWS_CHECK = "valid_rows"


@dg.asset(group_name="ingest", kinds={"pandas"})
def raw_contacts(context: dg.AssetExecutionContext, data_source: DataSource) -> dg.Output:
    """Every contact of the source file, typed, in file order, with its recovered calendar month."""
    try:
        loaded = data_source.load()
        months = recover_months(loaded.frame["month"], loaded.location)
    except (SourceError, MonthOrderError) as error:
        raise dg.Failure(
            description=str(error), metadata={"source": data_source.source}, allow_retries=False
        ) from error
    frame = loaded.frame.assign(contact_month=months)
    per_month = months.dt.strftime("%Y-%m").value_counts().sort_index()
    context.log.info("Read %d contacts from %s", loaded.rows, loaded.location)
    return dg.Output(
        frame,
        metadata={
            "source": data_source.source,
            "location": loaded.location,
            "form": loaded.form,
            "sha256": loaded.sha256,
            "source_sha256": loaded.source_sha256,
            "dagster/row_count": loaded.rows,
            "months": dg.MetadataValue.json(per_month.to_dict()),
        },
    )


class ContactsConfig(dg.Config):
    max_invalid_share: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Largest share of a month's rows that may fail validation. Rejected rows are kept in "
            "the contact_rejects table either way; above this share the month is not stored and "
            "nothing downstream runs."
        ),
    )
    landed_file: str | None = Field(
        default=None,
        description="A monthly extract in the landing location to validate, instead of the "
        "month's rows of raw_contacts. validate_landed_files sets it for every file it sees.",
    )


@dg.asset(
    group_name="ingest",
    partitions_def=monthly_partitions,
    ins={"raw_contacts": dg.AssetIn(input_manager_key=RAW_IF_STORED)},
    dagster_type=ContactsType,
    kinds={"pandas", "pandera"},
    check_specs=[
        dg.AssetCheckSpec(
            VALID_ROWS_CHECK,
            asset="contacts",
            blocking=True,
            description=(
                "Every row passes the Contacts schema for its month, or the share that fails is "
                "at most max_invalid_share; failing rows are counted and sampled here."
            ),
        )
    ],
)
def contacts(
    context: dg.AssetExecutionContext,
    config: ContactsConfig,
    raw_contacts: pd.DataFrame | None,
    monitoring_db: MonitoringDatabase,
    data_source: DataSource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """One calendar month of validated contacts, from the month's landed file or from
    raw_contacts; rows that fail validation go to contact_rejects."""
    month = _partition_month(context.partition_key)
    if config.landed_file:
        frame, source = _landed(config.landed_file, month, data_source)
    else:
        frame, source = _from_raw(raw_contacts, month, raw_source(context), data_source)
    result = validate_month(frame, month)
    monitoring_db.replace_rejects(month.date(), result.rejected, source.get("sha256", ""))
    passed = result.invalid_share <= config.max_invalid_share
    metadata = _quality_metadata(result, config.max_invalid_share, source, monitoring_db)
    yield dg.AssetCheckResult(
        check_name=VALID_ROWS_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
    )
    if not passed:
        # Raising before the output keeps the month's earlier materialization as it was.
        raise dg.Failure(
            description=_rejection_message(month, result, config.max_invalid_share, source),
            metadata=metadata,
            allow_retries=False,
        )
    yield dg.Output(
        result.valid,
        metadata=rounded(
            {
                "dagster/row_count": len(result.valid),
                "rejected_rows": len(result.rejected),
                "subscription_rate": float((result.valid["y"] == "yes").mean())
                if len(result.valid)
                else 0.0,
                "source": source.get("location", "unknown"),
                "source_sha256": source.get("sha256", ""),
            }
        ),
    )


def _partition_month(partition_key: str) -> pd.Timestamp:
    """The partition's month; a key outside the partitions fails before anything is checked."""
    month = pd.Timestamp(partition_key)
    if partition_key not in monthly_partitions.get_partition_keys():
        raise dg.Failure(
            description=f"contacts {month:%Y-%m}: not a month of the data; the partitions run "
            f"{FIRST_MONTH:%Y-%m}..{LAST_MONTH:%Y-%m}",
            allow_retries=False,
        )
    return month


def _landed(
    path: str, month: pd.Timestamp, data_source: DataSource
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A landed file's rows, which must be the partition's month."""
    try:
        landed = read_landed(Path(path), Path(data_source.cache_dir))
    except (SourceError, LandingError) as error:
        raise dg.Failure(
            description=f"contacts {month:%Y-%m}: {error} The month's stored data is unchanged.",
            metadata={"landed_file": path},
            allow_retries=False,
        ) from error
    if landed.month != month:
        raise dg.Failure(
            description=f"contacts {month:%Y-%m}: the landed file {path} holds "
            f"{landed.month:%Y-%m}, not this partition's month",
            allow_retries=False,
        )
    return landed.frame, {"location": str(landed.path), "sha256": landed.sha256}


def _from_raw(
    raw: pd.DataFrame | None, month: pd.Timestamp, source: dict[str, str], data_source: DataSource
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The month's rows of raw_contacts; a month the stored file does not reach fails."""
    if raw is None:
        raise dg.Failure(
            description=f"contacts {month:%Y-%m}: no data for the month: raw_contacts was never "
            f"materialized and no landed file was given. Materialize raw_contacts (the whole "
            f"file, {data_source.source}) or land the month's file in "
            f"{data_source.landing_dir or 'the landing location'}.",
            allow_retries=False,
        )
    first, last = raw["contact_month"].min(), raw["contact_month"].max()
    if not first <= month <= last:
        raise dg.Failure(
            description=f"contacts {month:%Y-%m}: raw_contacts "
            f"({source.get('location', data_source.source)}) holds {first:%Y-%m}..{last:%Y-%m}, "
            f"not this month; land the month's file instead.",
            allow_retries=False,
        )
    return raw[raw["contact_month"] == month], source


def raw_source(context: dg.AssetExecutionContext) -> dict[str, str]:
    """Location and checksum of the file behind the stored ``raw_contacts``."""
    event = context.instance.get_latest_materialization_event(raw_contacts.key)
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {key: str(meta[key].value) for key in ("location", "sha256") if key in meta}


def _quality_metadata(
    result: MonthValidation, threshold: float, source: dict[str, str], db: MonitoringDatabase
) -> dict[str, object]:
    counts = result.failure_counts()
    sample = result.rejected.head(SAMPLE_ROWS).reset_index()[["line", "reasons", *COLUMNS]]
    return rounded(
        {
            "rows": result.rows,
            "valid_rows": len(result.valid),
            "rejected_rows": len(result.rejected),
            "invalid_share": result.invalid_share,
            "max_invalid_share": threshold,
            "source": source.get("location", "unknown"),
            "rejects_table": f"contact_rejects in {db.describe()}",
            "failures_by_check": dg.MetadataValue.md(counts.to_markdown(index=False))
            if len(counts)
            else "none",
            "failing_rows_sample": dg.MetadataValue.md(sample.to_markdown(index=False))
            if len(sample)
            else "none",
        }
    )


def _rejection_message(
    month: pd.Timestamp, result: MonthValidation, threshold: float, source: dict[str, str]
) -> str:
    counts = result.failure_counts()
    by_check = "; ".join(
        f"column {row.column!r} fails {row.check} in {row.rows} row(s)"
        for row in counts.head(5).itertuples()
    )
    examples = "; ".join(
        f"line {line}: {reasons}" for line, reasons in result.rejected["reasons"].head(5).items()
    )
    return (
        f"contacts {month:%Y-%m} from {source.get('location', 'the source')}: "
        f"{len(result.rejected)} of {result.rows} rows ({result.invalid_share:.1%}) fail "
        f"validation, above max_invalid_share {threshold:.1%}. {by_check}. Examples: {examples}. "
        f"The rejected rows are in the contact_rejects table; the month's stored data is unchanged."
    )
