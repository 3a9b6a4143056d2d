"""Schema migrations of the monitoring database, with Alembic.

``upgrade`` brings a database to the newest revision: ``store.connect`` calls it, and so does
``bank-marketing db upgrade``. The revisions are in ``versions/``; ``env.py`` runs them on the
connection ``upgrade`` holds, so nothing else (no ``alembic.ini``) is needed.

A database made before migrations (its tables created by ``create_all``, with no
``alembic_version`` table) is compared with each revision it can have been made at, stamped at
the one it matches and upgraded from there; anything else is refused, naming what differs.

Several processes may upgrade at once (the service's replicas start together). On PostgreSQL a
transaction-level advisory lock serializes them, on SQLite ``BEGIN IMMEDIATE``; either way the
whole upgrade is one transaction, so one that fails leaves the database as it was, and the
process that waited finds the work done.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

FOLDER = Path(__file__).parent

# The revisions a database made by ``create_all`` (before migrations) can be at; the modules of
# these revisions declare their tables in ``tables(metadata)``.
BEFORE_MIGRATIONS = ("0001", "0002")

# How long an upgrade of a SQLite file waits for another process's upgrade of it to finish.
SQLITE_LOCK_TIMEOUT_S = 120.0


class MigrationError(RuntimeError):
    """The monitoring database cannot be brought to the schema this code needs."""


@dataclass(frozen=True)
class Migration:
    """What an upgrade or downgrade found and left."""

    before: str | None  # the revision found; None: no version table
    adopted: str | None  # the revision tables made before migrations were recognized as
    after: str | None


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(FOLDER))


def head() -> str:
    """The newest revision."""
    revision = scripts().get_current_head()
    assert revision is not None, f"no revisions in {FOLDER / 'versions'}"
    return revision


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(scripts().walk_revisions()))]


def schema_of(engine: sa.Engine) -> str | None:
    """The schema the engine puts the monitoring tables in (None: the database's default)."""
    return (engine.get_execution_options().get("schema_translate_map") or {}).get(None)


def current(engine: sa.Engine) -> str | None:
    """The database's revision; None when it has no version table."""
    with engine.connect() as connection:
        return _version(connection, schema_of(engine))


def upgrade(engine: sa.Engine, revision: str = "head") -> Migration:
    """Bring the database to ``revision``, adopting tables made before migrations."""
    schema = schema_of(engine)
    target = head() if revision == "head" else revision
    # Every connect of every process comes here: one query when there is nothing to do.
    with engine.connect() as connection:
        found = _version(connection, schema)
    if found == target:
        return Migration(found, None, found)
    with locked(engine) as connection:
        found = _version(connection, schema)
        if found == target:  # another process did it while this one waited
            return Migration(found, None, found)
        adopted = None
        if found is None:
            if schema and not sa.inspect(connection).has_schema(schema):
                connection.execute(sa.schema.CreateSchema(schema))
            adopted = _recognize(connection, schema)
            if adopted is not None:
                _alembic(connection, schema, command.stamp, adopted)
        _alembic(connection, schema, command.upgrade, revision)
        return Migration(found, adopted, _version(connection, schema))


def downgrade(engine: sa.Engine, revision: str) -> Migration:
    """Take the database back to ``revision`` ("base": no monitoring tables at all)."""
    schema = schema_of(engine)
    with locked(engine) as connection:
        found = _version(connection, schema)
        _alembic(connection, schema, command.downgrade, revision)
        return Migration(found, None, _version(connection, schema))


def recognize(engine: sa.Engine) -> str | None:
    """The revision an unversioned database's tables were made at; None when it has none of
    the monitoring tables. Raises ``MigrationError`` when they match no such revision."""
    with engine.connect() as connection:
        return _recognize(connection, schema_of(engine))


def tables_at(revision: str) -> sa.MetaData:
    """The tables ``create_all`` made for a database at ``revision`` (before migrations)."""
    if revision not in BEFORE_MIGRATIONS:
        raise ValueError(f"{revision} is not one of {BEFORE_MIGRATIONS}")
    return _tables_at(revision)


@functools.cache
def _tables_at(revision: str) -> sa.MetaData:
    metadata = sa.MetaData()
    for script in reversed(list(scripts().iterate_revisions(revision, "base"))):
        script.module.tables(metadata)
    return metadata


def differences(
    connection: sa.Connection,
    metadata: sa.MetaData,
    schema: str | None,
    considered: set[str] | None = None,
) -> list[str]:
    """How the tables in ``schema`` differ from ``metadata``'s, one sentence a difference; empty
    when they are the same (columns, types, nullability, comments, keys, indexes).

    Tables are compared when ``metadata`` or ``considered`` names them; other tables in the
    schema are left out, and so is the version table.
    """
    names = set(metadata.tables) | (considered or set())
    if schema == connection.dialect.default_schema_name:
        schema = None
    target = metadata
    if schema is not None:
        target = sa.MetaData()
        for table in metadata.tables.values():
            table.to_metadata(target, schema=schema)

    def include_name(name: str | None, kind: str, parent_names: Any) -> bool:
        if kind == "schema":
            return name == schema
        return kind != "table" or name in names

    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_schemas": schema is not None,
            "include_name": include_name,
            "version_table_schema": schema,
        },
    )
    return [_describe(diff) for diff in compare_metadata(context, target)]


def _version(connection: sa.Connection, schema: str | None) -> str | None:
    version = MigrationContext.configure(
        connection, opts={"version_table_schema": schema}
    ).get_current_revision()
    known = revisions()
    if version is not None and version not in known:
        raise MigrationError(
            f"the monitoring database{_where(schema)} is at revision {version}, which this "
            f"version of bank-marketing does not know (it has {', '.join(known)}): a newer "
            f"version upgraded it; run that version, or downgrade the database with it first"
        )
    return version


def _recognize(connection: sa.Connection, schema: str | None) -> str | None:
    known = set(tables_at(BEFORE_MIGRATIONS[-1]).tables)
    present = known & set(sa.inspect(connection).get_table_names(schema=schema))
    if not present:
        return None
    closest: tuple[str, list[str]] | None = None
    for revision in reversed(BEFORE_MIGRATIONS):
        found = differences(connection, tables_at(revision), schema, considered=known)
        if not found:
            return revision
        if closest is None or len(found) < len(closest[1]):
            closest = (revision, found)
    assert closest is not None
    revision, found = closest
    raise MigrationError(
        f"the monitoring database{_where(schema)} has tables ({', '.join(sorted(present))}) but "
        f"no alembic_version table, and they match no schema it can have been made with. "
        f"Closest is revision {revision}, from which it differs: {'; '.join(found)}"
    )


@contextmanager
def locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that no upgrade of the same tables runs beside: upgrades
    started meanwhile wait until it ends."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.begin() as connection:
            key = _lock_key(schema_of(engine))
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            yield connection
    elif dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or "memory" in engine.url.query.get("mode", ""):
            # One connection, one process: nothing to serialize against.
            with engine.begin() as connection:
                yield connection
            return
        serial = _begin_immediate(engine)
        try:
            with serial.begin() as connection:
                yield connection
        finally:
            serial.dispose()
    else:
        raise MigrationError(
            f"the monitoring database must be PostgreSQL or SQLite, not {dialect} "
            f"({engine.url.render_as_string(hide_password=True)})"
        )


def _begin_immediate(engine: sa.Engine) -> sa.Engine:
    """An engine on the same SQLite file whose transactions begin with ``BEGIN IMMEDIATE``.

    That takes the file's write lock at once, so a second upgrade waits there (up to
    ``SQLITE_LOCK_TIMEOUT_S``) instead of reading the version before the first one wrote it; and
    with Python's own transaction handling off, the DDL runs inside that transaction too.
    """
    serial = sa.create_engine(
        engine.url, poolclass=sa.pool.NullPool, connect_args={"timeout": SQLITE_LOCK_TIMEOUT_S}
    )

    @sa.event.listens_for(serial, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(serial, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    translate = engine.get_execution_options().get("schema_translate_map")
    return serial.execution_options(schema_translate_map=translate) if translate else serial


def _lock_key(schema: str | None) -> int:
    """The advisory lock of upgrades of the monitoring tables in ``schema``: a signed bigint."""
    digest = hashlib.sha256(f"bank-marketing migrations {schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _alembic(
    connection: sa.Connection,
    schema: str | None,
    run: Callable[..., Any],
    revision: str,
) -> None:
    """Run an Alembic command (upgrade, downgrade, stamp) on ``connection``, in its transaction."""
    config = Config()
    config.set_main_option("script_location", str(FOLDER))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    try:
        run(config, revision)
    except CommandError as error:
        raise MigrationError(
            f"the monitoring database{_where(schema)}: {run.__name__} to {revision} failed: {error}"
        ) from error


def _where(schema: str | None) -> str:
    return f" (schema {schema})" if schema else ""


def _describe(diff: Any) -> str:
    """One of Alembic's differences as a sentence: what the database has against what is
    expected."""
    if isinstance(diff, list):  # the changes of one column
        return "; ".join(_describe(change) for change in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        table = diff[1]
        return f"table {table.name} " + ("is missing" if kind == "add_table" else "is unexpected")
    if kind in ("add_column", "remove_column"):
        _, _, table, column = diff
        state = "is missing" if kind == "add_column" else "is unexpected"
        return f"column {table}.{column.name} {state}"
    if kind.startswith(("add_", "remove_")):  # indexes and constraints
        item = diff[1]
        what = kind.partition("_")[2].replace("_", " ")
        state = "is missing" if kind.startswith("add_") else "is unexpected"
        return f"{what} {item.name} on {item.table.name} {state}"
    if kind.startswith("modify_"):
        _, _, table, column, _, found, expected = diff
        what = kind.partition("_")[2].replace("_", " ")
        return f"column {table}.{column}: {what} is {found!r}, expected {expected!r}"
    return repr(diff)
