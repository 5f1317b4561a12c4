"""The one place where the warehouse's SQL differs between DuckDB and PostgreSQL.

tutorloop's SQL is written once, in the dialect DuckDB and PostgreSQL share (DuckDB follows
PostgreSQL closely), with DuckDB's ``?`` placeholders. :func:`to_postgres` turns a statement
into what PostgreSQL accepts: ``%s`` placeholders (with parameters, every literal ``%`` doubled,
inside string literals too, as psycopg requires), and the few type
names DuckDB spells its own way. A function with no common spelling is not rewritten here by
pattern: the statement that needs it asks :func:`dialect_of` and writes both forms.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

Dialect = Literal["duckdb", "postgres"]

# Outside quotes only: a '?' or '%' inside a string literal or a quoted name stays as it is.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%|[^'\"?%-]+|-")
_TYPES = (
    (re.compile(r"\bDOUBLE\b(?!\s+PRECISION)", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
    (re.compile(r"\bUBIGINT\b", re.IGNORECASE), "NUMERIC(20)"),
    (re.compile(r"\bBEGIN TRANSACTION\b", re.IGNORECASE), "BEGIN"),
)


@functools.lru_cache(maxsize=2048)
def to_postgres(sql: str, *, with_params: bool = True) -> str:
    """``sql`` (DuckDB spelling) as PostgreSQL (psycopg) accepts it."""
    percent = "%%" if with_params else "%"
    out: list[str] = []
    for token in _TOKENS.findall(sql):
        if token == "?":
            out.append("%s")
        elif token == "%":
            out.append(percent)
        elif token.startswith(("'", '"')):
            out.append(token.replace("%", percent))
        elif token.startswith("--"):
            out.append(token.replace("%", percent).replace("?", ""))
        else:
            for pattern, replacement in _TYPES:
                token = pattern.sub(replacement, token)
            out.append(token)
    return "".join(out)


def dialect_of(con: object) -> Dialect:
    """Which engine a warehouse connection talks to."""
    return "postgres" if getattr(con, "dialect", "duckdb") == "postgres" else "duckdb"


def execute_schema_change(con: Any, sql: str) -> None:
    """Run DDL written for DuckDB, whose views do not pin the tables they read.

    PostgreSQL refuses to drop or rebuild a table a view reads, and to reorder a view's
    columns with ``CREATE OR REPLACE``. So there the views are dropped first and those the
    change did not create again are restored from their saved definitions afterwards.
    """
    if dialect_of(con) != "postgres":
        con.execute(sql)
        return
    listing = "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()"
    saved = [(str(name), str(body)) for name, body in con.execute(listing).fetchall()]
    for name, _ in saved:
        con.execute(f'DROP VIEW IF EXISTS "{name}" CASCADE')
    con.execute(sql)
    present = {str(row[0]) for row in con.execute(listing).fetchall()}
    pending = [(n, b) for n, b in saved if n not in present]
    for _ in range(len(saved)):  # a view that reads another waits for it
        if not pending:
            return
        failed = []
        for name, body in pending:
            try:
                con.execute("SAVEPOINT restore_view")
                con.execute(f'CREATE VIEW "{name}" AS {body}')
                con.execute("RELEASE SAVEPOINT restore_view")
            except Exception:
                con.execute("ROLLBACK TO SAVEPOINT restore_view")
                failed.append((name, body))
        pending = failed
    if not pending:
        return
    raise RuntimeError(f"could not restore views {[n for n, _ in pending]} after a migration")
