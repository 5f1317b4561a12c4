"""`tutorloop privacy forget`: erasure from the warehouse and files, then from the models.

The command lives above both packages it drives: privacy erases the user's data, the registry
rebuilds what the models trained on it ship row by row (:mod:`registry.erasure_models`).
"""

from __future__ import annotations

import getpass

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, err_console, fail, print_json, settings_of
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.tables import DEFAULT_TENANT
from tutorloop.infra.warehouse_backends import open_warehouse

__all__ = ["forget_cmd"]


def forget_cmd(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="the pseudonymous user id to erase"),
    tenant: str | None = typer.Option(
        None, "--tenant", help=f"the user's tenant (default: {DEFAULT_TENANT})"
    ),
    all_tenants: bool = typer.Option(
        False, "--all-tenants", help="erase this user id in every tenant (not with --tenant)"
    ),
    actor: str = typer.Option("", "--actor", help="who asked (recorded); default: the OS user"),
    json_out: bool = JSON_OUT,
) -> None:
    """Delete a user's cases, labels, escalations and review items in one tenant; record the
    erasure; rebuild what the models trained on them ship row by row."""
    from tutorloop.privacy.erasure import forget
    from tutorloop.registry.erasure_models import reach_models

    if all_tenants and tenant is not None:
        fail("give --tenant or --all-tenants, not both", 2)
    settings = settings_of(ctx)
    warehouse = open_warehouse(settings)
    report = forget(
        warehouse,
        user,
        actor=actor or getpass.getuser(),
        tenant_id=None if all_tenants else (tenant or DEFAULT_TENANT),
        broker_retention_hours=settings.streams.retention_hours,
    )
    if report.other_tenants:
        err_console.print(
            f"note: user id {user!r} also has cases in tenant(s) "
            f"{', '.join(report.other_tenants)}, not erased (--tenant T or --all-tenants)",
            highlight=False,
            soft_wrap=True,
        )
    try:
        models = reach_models(settings, warehouse, report.erasure_id)
    except TutorloopError as exc:
        fail(
            f"erasure {report.erasure_id} is recorded and the user's data deleted, but the "
            f"models were not reached: {exc}; retry with `tutorloop registry refit-erased "
            f"{report.erasure_id}`"
        )
    if json_out:
        print_json({**report.to_dict(), "models": models.to_dict()})
        return
    console.print(
        f"erased {report.subject} in "
        f"{'every tenant' if report.tenant_id is None else f'tenant {report.tenant_id}'}: "
        f"{report.cases_deleted} cases, {report.labels_deleted} labels, "
        f"{report.escalations_deleted} escalations, {report.review_items_deleted} review items"
    )
    if report.broker_copy_expires_at:
        console.print(
            f"Kafka still holds the raw events until {report.broker_copy_expires_at} (topic "
            "retention, streams.retention_hours; for topics tutorloop created)"
        )
    if report.dataset_versions or report.model_versions:
        table = Table("contained the user (retrain without them)", "id")
        for dataset in report.dataset_versions:
            table.add_row("dataset version", dataset)
        for model in report.model_versions:
            table.add_row("model version", model)
        console.print(table)
    if models.refitted:
        console.print(
            f"rebuilt without the user's rows (retrieval memory, open-set scorer): "
            f"{', '.join(models.refitted)}"
            + (f"; champion {models.republished} republished" if models.republished else "")
            + (
                f"; {models.blobs_deleted} replaced file(s) deleted from the store"
                if models.blobs_deleted
                else ""
            )
        )
    if models.marked:
        console.print(
            "marked versions are never warm-started from, and a rollback to one needs --force"
        )
