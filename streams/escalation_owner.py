"""Whose prediction an escalation is about: the (tenant, user) a request id is scoped by.

Clients choose request ids, so two users (or two tenants) may send the same one. An escalation
is joined to a prediction only through its owner — the request id *and* the prediction's
tenant and user — never through the request id alone: a human label lands on that user's case
only, a text-less prediction takes text from its own user's escalation only, and an erased
user's escalations are recognized by their owner.

An escalation names its owner (``tenant_id`` and ``user_id``, as sent to ``/predict``), or the
owner is looked up from the audit: the one (tenant, user) whose predictions carry that request
id. When the escalation comes first, the owner is filled in when the prediction arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import duckdb

from tutorloop.labeling.case_store import label_escalated_cases
from tutorloop.privacy.tombstone import erased_users
from tutorloop.streams.events import PredictionEvent

__all__ = [
    "AMBIGUOUS",
    "MISMATCH",
    "attach_escalations",
    "claim_owners",
    "escalated_requests",
    "request_key",
    "resolve_owners",
]

log = logging.getLogger(__name__)

#: Dead-letter reasons (they hold no ids: request and user ids come from clients).
MISMATCH = "escalation's tenant_id/user_id do not match the prediction of its request_id"
AMBIGUOUS = (
    "escalation's request_id is shared by several users' predictions: "
    "the escalation must name tenant_id and user_id"
)

Owner = tuple[str, str]
RequestKey = tuple[str, str, str]


def request_key(event: PredictionEvent) -> RequestKey:
    """A prediction's request, scoped by its owner: (tenant, user, request id)."""
    return event.tenant_id, event.user_id, event.request_id


def _owners(con: duckdb.DuckDBPyConnection, request_ids: Iterable[str]) -> dict[str, set[Owner]]:
    """The (tenant, user) pairs whose audited predictions carry each request id."""
    wanted = sorted(set(request_ids))
    if not wanted:
        return {}
    rows = con.execute(
        "SELECT DISTINCT request_id, tenant_id, user_id FROM predictions_audit"
        " WHERE request_id IN (SELECT unnest(?::VARCHAR[]))",
        [wanted],
    ).fetchall()
    found: dict[str, set[Owner]] = {}
    for request_id, tenant, user in rows:
        found.setdefault(str(request_id), set()).add((str(tenant), str(user)))
    return found


def _candidates(owners: set[Owner], tenant: str | None) -> set[Owner]:
    return {o for o in owners if tenant is None or o[0] == tenant}


def resolve_owners(
    con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Fill in the owner of escalation rows (``request_id``, ``tenant_id``, ``user_id``; the
    last two None where the escalation did not name them) from the audit.

    Returns the rows to store (owner filled in, or still open when no prediction of the
    request arrived yet) and the rejected rows with their reason: an escalation that names a
    user whose prediction of that request does not exist while other users' do, or that
    names no user while several users' predictions carry the request id.
    """
    owners = _owners(con, (row["request_id"] for row in rows))
    kept: list[dict[str, Any]] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    for row in rows:
        known = owners.get(row["request_id"], set())
        if row["user_id"] is not None:
            if known and (row["tenant_id"], row["user_id"]) not in known:
                rejected.append((row, MISMATCH))
            else:
                kept.append(row)
            continue
        candidates = _candidates(known, row["tenant_id"])
        if len(candidates) > 1:
            rejected.append((row, AMBIGUOUS))
            continue
        if known and not candidates:
            rejected.append((row, MISMATCH))  # the request exists only in other tenants
            continue
        if candidates:
            (row["tenant_id"], row["user_id"]), *_ = candidates
        kept.append(row)
    return kept, rejected


def claim_owners(con: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    """Give escalations that came before their prediction the owner of that prediction, now
    audited: when exactly one (tenant, user) carries the request id. Returns how many."""
    if not request_ids:
        return 0
    open_rows = con.execute(
        "SELECT event_id, request_id, tenant_id FROM escalations"
        " WHERE user_id IS NULL AND request_id IN (SELECT unnest(?::VARCHAR[]))",
        [request_ids],
    ).fetchall()
    if not open_rows:
        return 0
    owners = _owners(con, (str(r[1]) for r in open_rows))
    claimed = 0
    for event_id, request_id, tenant in open_rows:
        candidates = _candidates(owners.get(str(request_id), set()), tenant)
        if len(candidates) != 1:
            if candidates:
                log.warning(
                    "escalation %s stays unattached: several users' predictions carry its "
                    "request id and it names none",
                    event_id,
                )
            continue
        (owner_tenant, owner_user), *_ = candidates
        if erased_users(con, [(owner_tenant, owner_user)]):
            # Its prediction is an erased user's: the escalation goes too.
            con.execute("DELETE FROM escalations WHERE event_id = ?", [event_id])
            continue
        con.execute(
            "UPDATE escalations SET tenant_id = ?, user_id = ? WHERE event_id = ?",
            [owner_tenant, owner_user, event_id],
        )
        claimed += 1
    return claimed


def escalated_requests(con: duckdb.DuckDBPyConnection, keys: list[RequestKey]) -> set[RequestKey]:
    """Which of these (tenant, user, request id) have an escalation of their own."""
    if not keys:
        return set()
    rows = con.execute(
        "SELECT DISTINCT tenant_id, user_id, request_id FROM escalations "
        "WHERE request_id IN (SELECT unnest(?::VARCHAR[])) AND user_id IS NOT NULL",
        [sorted({key[2] for key in keys})],
    ).fetchall()
    return {(str(t), str(u), str(r)) for t, u, r in rows} & set(keys)


def attach_escalations(con: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    """Link escalations to the cases of their owner; turn human labels into gold label rows."""
    if not request_ids:
        return 0
    con.execute(
        "UPDATE escalations SET case_id = c.case_id FROM cases c "
        "WHERE escalations.request_id = c.request_id AND escalations.case_id IS NULL "
        "AND escalations.tenant_id = c.tenant_id AND escalations.user_id = c.user_id "
        "AND escalations.request_id IN (SELECT unnest(?::VARCHAR[]))",
        [request_ids],
    )
    return label_escalated_cases(con, request_ids)
