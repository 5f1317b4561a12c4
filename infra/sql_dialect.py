"""The one place where the warehouse's SQL differs between DuckDB and PostgreSQL.

tutorloop's SQL is written once, in the dialect DuckDB and PostgreSQL share (DuckDB follows
PostgreSQL closely), with DuckDB's ``?`` placeholders. :func:`to_postgres` turns a statement
into what PostgreSQL accepts: ``%s`` placeholders (with parameters, every literal ``%`` doubled,
inside string literals too, as psycopg requires), the few type names DuckDB spells its own way,
``INTERVAL 5 MINUTE`` quoted, ``unnest(?)`` typed (its parameter is always a list of strings:
ids, labels, reasons; psycopg sends it untyped), and the DuckDB functions the loop uses that
have an exact PostgreSQL equivalent: ``arg_max``/``arg_min`` (an ordered ``array_agg`` that,
like DuckDB, skips rows whose ordering value is NULL) and ``epoch``.
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


_INTERVAL = re.compile(r"\bINTERVAL\s+(\d+)\s+([A-Za-z]+)\b", re.IGNORECASE)
_FUNCTIONS = re.compile(r"\b(arg_max|arg_min|epoch)\s*\(", re.IGNORECASE)


def _arguments(sql: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose "(" is at ``start``; the index after
    its ")"."""
    depth, args, begin, i = 0, [], start + 1, start
    quote = ""
    while i < len(sql):
        ch = sql[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[begin:i].strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(sql[begin:i].strip())
            begin = i + 1
        i += 1
    raise ValueError(f"unbalanced parentheses in SQL: {sql[start : start + 60]!r}")


def _rewrite_functions(sql: str) -> str:
    out, pos = [], 0
    while (match := _FUNCTIONS.search(sql, pos)) is not None:
        args, end = _arguments(sql, match.end() - 1)
        args = [_rewrite_functions(a) for a in args]
        name = match.group(1).lower()
        if name in ("arg_max", "arg_min"):
            order = "DESC" if name == "arg_max" else "ASC"
            call = (f"(array_agg({args[0]} ORDER BY {args[1]} {order}) "
                    f"FILTER (WHERE {args[1]} IS NOT NULL))[1]")  # fmt: skip
        else:
            call = f"extract(epoch FROM {args[0]})"
        out.append(sql[pos : match.start()] + call)
        pos = end
    out.append(sql[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def to_postgres(sql: str, *, with_params: bool = True) -> str:
    """``sql`` (DuckDB spelling) as PostgreSQL (psycopg) accepts it."""
    if _FUNCTIONS.search(sql):
        sql = _rewrite_functions(sql)
    percent = "%%" if with_params else "%"
    out: list[str] = []
    for token in _TOKENS.findall(sql):
        if token == "?":
            out.append("%s::text[]" if out and out[-1].endswith("unnest(") else "%s")
        elif token == "%":
            out.append(percent)
        elif token.startswith(("'", '"')):
            out.append(token.replace("%", percent))
        elif token.startswith("--"):
            out.append(token.replace("%", percent).replace("?", ""))
        else:
            for pattern, replacement in _TYPES:
                token = pattern.sub(replacement, token)
            out.append(_INTERVAL.sub(r"INTERVAL '\1 \2'", token))
    return "".join(out)


def dialect_of(con: object) -> Dialect:
    """Which engine a warehouse connection talks to."""
    return "postgres" if getattr(con, "dialect", "duckdb") == "postgres" else "duckdb"


def row_lock(con: object, mode: Literal["FOR SHARE", "FOR UPDATE"]) -> str:
    """`` FOR SHARE`` / `` FOR UPDATE`` to end a SELECT with on PostgreSQL, where concurrent
    writers need row locks; empty on DuckDB, which has one writing process at a time."""
    return f" {mode}" if dialect_of(con) == "postgres" else ""


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
