"""The warehouse on PostgreSQL: the multi-host backend (``warehouse.url = "postgresql://..."``).

Where DuckDB allows one writer per file (hence :class:`~tutorloop.infra.warehouse.Warehouse`'s
locks, tickets and gate), PostgreSQL takes concurrent writers from many hosts; so here a
connection is simply opened per unit of work, and none of the DuckDB machinery applies.

Statements are written once in the shared dialect (:mod:`infra.sql_dialect`) and translated
here. The connection object handed to callers offers the part of DuckDB's connection API the
loop uses (``execute`` returning something with ``fetchone``/``fetchall``/``description``);
:func:`~tutorloop.infra.warehouse.insert_arrow` takes a COPY path on it.

Erasure needs deleted rows gone from disk: PostgreSQL keeps dead row versions until they are
vacuumed, and ``VACUUM FULL`` rewrites each table without them (:meth:`compact`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.migrations import migrate
from tutorloop.infra.sql_dialect import to_postgres
from tutorloop.infra.warehouse import Warehouse, WarehouseBusyError


class PostgresUnavailableError(TutorloopError):
    """The PostgreSQL warehouse could not be reached; the message says where and why."""


_PRIMARY_KEYS: dict[str, list[str]] = {}  # the schema is the same in every database we open
_DML = re.compile(r"\s*(?:INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


class PgConnection:
    """One PostgreSQL connection, spoken to in the warehouse's shared SQL dialect."""

    dialect = "postgres"

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._cursor: Any = None
        self._dml = False
        # JSON comes back as text, as DuckDB gives it (callers parse it themselves).
        from psycopg.types.string import TextLoader

        for name in ("json", "jsonb"):
            raw.adapters.register_loader(name, TextLoader)
        import psycopg

        # Transient: the transaction rolls back and the caller retries it (the stream worker
        # retries a busy warehouse forever, never dropping the batch).
        self._transient = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                           psycopg.errors.LockNotAvailable)  # fmt: skip

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgConnection:
        args = list(params) if params else None
        try:
            self._cursor = self._raw.execute(to_postgres(sql, with_params=bool(args)), args)
        except self._transient as exc:
            raise WarehouseBusyError(f"PostgreSQL: {type(exc).__name__}; retry") from exc
        self._dml = _DML.match(sql) is not None
        return self

    @property
    def description(self) -> Any:
        return None if self._cursor is None else self._cursor.description

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._count()
        if rows is not None:
            return rows[0]
        row = self._cursor.fetchone() if self._has_rows() else None
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._count()
        if rows is not None:
            return rows
        return [tuple(r) for r in self._cursor.fetchall()] if self._has_rows() else []

    def _count(self) -> list[tuple[Any, ...]] | None:
        # DuckDB answers INSERT/UPDATE/DELETE with one row holding the count of rows changed;
        # the loop reads it that way, so PostgreSQL's rowcount is given back the same way.
        if self._dml and self._cursor is not None and self._cursor.description is None:
            return [(int(self._cursor.rowcount),)]
        return None

    def _has_rows(self) -> bool:
        return self._cursor is not None and self._cursor.description is not None

    def copy_arrow(self, table: str, rows: pa.Table) -> int:
        """Insert ``rows`` with COPY through a temporary table; rows whose key exists are
        skipped (``ON CONFLICT DO NOTHING``, as the DuckDB path); return rows inserted."""
        cols = ", ".join(rows.column_names)
        self._raw.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _batch_{table} (LIKE {table} INCLUDING DEFAULTS)"
        )
        self._raw.execute(f"TRUNCATE _batch_{table}")
        with self._raw.cursor().copy(f"COPY _batch_{table} ({cols}) FROM STDIN") as copy:
            for row in rows.to_pylist():
                copy.write_row([_copy_value(row[c]) for c in rows.column_names])
        # Rows go in primary-key order: two writers inserting overlapping keys (a redelivered
        # batch during a rebalance) then wait on each other in one order and cannot deadlock.
        order = ", ".join(self._primary_key(table)) or cols
        cursor = self._raw.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _batch_{table} ORDER BY {order} "
            "ON CONFLICT DO NOTHING"
        )
        self._raw.execute(f"DROP TABLE IF EXISTS _batch_{table}")
        return int(cursor.rowcount)

    def _primary_key(self, table: str) -> list[str]:
        if table not in _PRIMARY_KEYS:
            rows = self._raw.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey, a.attnum)",
                [table],
            ).fetchall()
            _PRIMARY_KEYS[table] = [str(r[0]) for r in rows]
        return _PRIMARY_KEYS[table]

    def close(self) -> None:
        self._raw.close()


def _copy_value(value: Any) -> Any:
    # JSON columns arrive from Arrow as dicts or lists; COPY's text format wants JSON text.
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _as_duckdb(con: PgConnection) -> duckdb.DuckDBPyConnection:
    # Callers are typed against DuckDB's connection; PgConnection offers the part they use.
    return con  # type: ignore[return-value]


class PostgresWarehouse(Warehouse):
    """The warehouse in a PostgreSQL database, a connection per unit of work."""

    # No DuckDB file, so Warehouse.__init__ (paths of locks and tickets) does not apply.
    def __init__(self, url: str, *, password: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url
        self.lock_timeout_s = timeout_s
        self._password = password
        self._migrated = False
        self._migrate_lock = threading.Lock()

    @property
    def location(self) -> str:
        return _redacted(self.url)

    def _open_pg(self, timeout_s: float) -> PgConnection:
        import psycopg

        extra: dict[str, Any] = {"connect_timeout": max(1, int(timeout_s))}
        if self._password is not None:
            extra["password"] = self._password
        try:
            raw = psycopg.connect(self.url, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostgresUnavailableError(
                f"cannot reach the PostgreSQL warehouse at {_redacted(self.url)}: {first}"
            ) from None
        return PgConnection(raw)

    @contextlib.contextmanager
    def connect(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._open_pg(self.lock_timeout_s if timeout_s is None else timeout_s)
        try:
            self._ensure_pg_migrated(con)
            yield _as_duckdb(con)
        finally:
            con.close()

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        # No single-writer lock to jump: urgent work needs no special path on PostgreSQL.
        yield

    def compact(self, *, timeout_s: float | None = None) -> tuple[int, int]:
        """``VACUUM FULL``: every table rewritten without dead rows; database size before/after."""
        with self.connect(timeout_s=timeout_s) as con:
            size = "SELECT pg_database_size(current_database())"
            before = int((con.execute(size).fetchone() or (0,))[0])
            con.execute("VACUUM FULL")
            after = int((con.execute(size).fetchone() or (0,))[0])
        return before, after

    def _ensure_pg_migrated(self, con: PgConnection) -> None:
        if self._migrated:
            return
        with self._migrate_lock:
            if not self._migrated:
                # One migrator at a time across hosts: a transaction-free advisory lock.
                con.execute("SELECT pg_advisory_lock(7406)")
                try:
                    migrate(_as_duckdb(con), source=_redacted(self.url))
                finally:
                    con.execute("SELECT pg_advisory_unlock(7406)")
                self._migrated = True


def _redacted(url: str) -> str:
    """The URL without a password in it (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
