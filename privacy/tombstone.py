"""Erased users stay erased: the ``erasures`` records are the tombstone every writer checks.

An erasure deletes a user's content, but their events stay in Kafka until retention and may
come back: a replayed batch (a worker restarted before committing offsets), a late escalation
that re-reads the prediction. Writers ask :func:`erased_users` inside the transaction that
would insert the content, and skip what it names; a concurrent ``privacy forget`` then either
ran before (its record is visible) or after (it deletes what was inserted).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from tutorloop.infra.hashing import subject_hash


def erased_users(con: duckdb.DuckDBPyConnection, user_ids: Iterable[str]) -> set[str]:
    """The ids among ``user_ids`` that an erasure record names (by subject hash)."""
    by_hash = {subject_hash(u): u for u in set(user_ids)}
    if not by_hash:
        return set()
    rows = con.execute(
        "SELECT DISTINCT user_id FROM erasures WHERE user_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(by_hash)],
    ).fetchall()
    return {by_hash[str(r[0])] for r in rows}
