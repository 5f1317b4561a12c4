"""`tutorloop contract init` and `tutorloop contract show`."""

from __future__ import annotations

from pathlib import Path

import typer

from tutorloop.infra.cli_common import (
    JSON_OUT,
    TEXT_COLUMN,
    console,
    fail,
    print_json,
    settings_of,
)
from tutorloop.infra.warehouse_backends import open_warehouse

contract_app = typer.Typer(help="The model contract the registry's gates are derived from.")


@contract_app.command("init")
def init_cmd(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None,
        "--data",
        dir_okay=False,
        help="labeled CSV whose labels become the label set "
        "(default: the champion's labels, if there is one)",
    ),
    text_col: str = TEXT_COLUMN,
    label_col: str | None = typer.Option(
        None, "--label-col", help="default: label/category/intent"
    ),
    oos_label: str | None = typer.Option(None, "--oos-label", help="default: registry.oos_label"),
    out: Path | None = typer.Option(None, "--out", help="default: registry.contract"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Write a commented contract.toml from the settings' defaults and the data's labels."""
    from pydantic import ValidationError

    from tutorloop.registry.contract import ContractError, contract_path, default_contract
    from tutorloop.registry.contract_file import write_contract

    settings = settings_of(ctx)
    labels: list[str] = []
    if data is not None:
        from tutorloop.labeling.labeled_csv import read_labeled_csv

        labels = read_labeled_csv(data, text_col, label_col).label_set
    else:
        from tutorloop.registry.store import champion

        if settings.warehouse.url is not None or settings.warehouse_path.exists():
            current = champion(open_warehouse(settings))
            labels = list(current.label_set) if current else []
    try:
        contract = default_contract(settings, labels, oos_label=oos_label)
    except ValidationError as exc:
        fail(exc.errors()[0]["msg"])
    path = out or contract_path(settings)
    try:
        write_contract(contract, path, overwrite=force)
    except (FileExistsError, ContractError) as exc:
        fail(str(exc))
    console.print(f"wrote {path}: {contract.ref}, {len(labels)} labels", markup=False)


@contract_app.command("show")
def show_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """The contract in force (the file, or the built-in defaults) and its hash."""
    from tutorloop.registry.contract import load_contract
    from tutorloop.registry.contract_file import render_contract

    contract = load_contract(settings_of(ctx))
    if json_out:
        print_json({**contract.model_dump(mode="json"), "sha256": contract.digest,
                    "source": contract.source})  # fmt: skip
        return
    console.print(f"# {contract.ref}, from {contract.source}", highlight=False, markup=False)
    console.print(render_contract(contract), highlight=False, markup=False)
