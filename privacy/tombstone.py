"""Erased users stay erased: the ``erasures`` records are the tombstone every writer checks.

An erasure deletes a user's content, but their events stay in Kafka until retention and may
come back: a replayed batch (a worker restarted before committing offsets), a late escalation
that re-reads the prediction. Writers ask :func:`erased_users` inside the transaction that
would insert the content, and skip what it names; a concurrent ``privacy forget`` then either
ran before (its record is visible) or after (it deletes what was inserted).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb

from tutorloop.infra.hashing import subject_hash

ERASED_PREFIX = "erased:"


def pseudonym(erasure_id: str) -> str:
    """What an erased user's audit rows name instead of the user id: the erasure, which the
    record's subject hash cannot be guessed from (unlike a hash of the id)."""
    return ERASED_PREFIX + erasure_id


def erasures_of(
    con: duckdb.DuckDBPyConnection, subjects: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The erasure id covering each of the (tenant_id, user_id) pairs an erasure record names:
    one of that user id in that tenant, or of that user id in every tenant (``tenant_id``
    NULL). A user id that is an erasure's pseudonym (audit rows after the erasure) names it."""
    by_hash: dict[str, list[tuple[str, str]]] = {}
    by_id: dict[str, list[tuple[str, str]]] = {}
    for tenant, user in set(subjects):
        # A client may send an id shaped like a pseudonym: it is looked up as an id too.
        by_hash.setdefault(subject_hash(user), []).append((tenant, user))
        if user.startswith(ERASED_PREFIX):
            by_id.setdefault(user.removeprefix(ERASED_PREFIX), []).append((tenant, user))
    if not by_hash and not by_id:
        return {}
    rows = con.execute(
        "SELECT erasure_id, user_id, tenant_id FROM erasures"
        " WHERE user_id IN (SELECT unnest(?::VARCHAR[]))"
        " OR erasure_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(by_hash), list(by_id)],
    ).fetchall()
    found: dict[tuple[str, str], str] = {}
    for erasure_id, subject, scope in rows:
        for tenant, user in by_hash.get(str(subject), []):
            if scope is None or scope == tenant:
                found[(tenant, user)] = str(erasure_id)
        for pair in by_id.get(str(erasure_id), []):
            found[pair] = str(erasure_id)
    return found


def erased_users(
    con: duckdb.DuckDBPyConnection, subjects: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (tenant_id, user_id) pairs among ``subjects`` that an erasure record covers."""
    return set(erasures_of(con, subjects))


def pseudonymize_erased(
    con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Name the erasure instead of the user in rows (with ``tenant_id`` and ``user_id``) of an
    erased user, in place; return the erased (tenant_id, user_id) pairs."""
    erased = erasures_of(con, [(row["tenant_id"], row["user_id"]) for row in rows])
    for row in rows:
        if (key := (row["tenant_id"], row["user_id"])) in erased:
            row["user_id"] = pseudonym(erased[key])
    return set(erased)
