"""`tutorloop registry ...` and `tutorloop lineage ...`."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, fail, print_json, settings_of
from tutorloop.infra.tables import ModelStatus
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry.rollout_cli import canary_app

registry_app = typer.Typer(help="Model versions: gates, promote, rollback, history.")
lineage_app = typer.Typer(help="Which data, which consent and which model produced what.")
registry_app.add_typer(canary_app, name="canary")

_ACTOR = typer.Option("", "--actor", help="who acts (recorded); default: the OS user")


def _warehouse(ctx: typer.Context) -> Any:

    return open_warehouse(settings_of(ctx))


def _metric(card: dict[str, Any], key: str) -> str:
    q = (card.get("metrics") or {}).get("eval") or (card.get("metrics") or {}).get(
        "validation_calibrated"
    )
    return f"{q[key]:.3f}" if isinstance(q, dict) and key in q else ""


@registry_app.command("list")
def list_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Every model version, oldest first."""
    from tutorloop.registry.store import list_versions

    versions = list_versions(_warehouse(ctx))
    if json_out:
        print_json(
            [
                {"version": v.version, "status": v.status, "run_id": v.run_id,
                 "dataset_hash": v.dataset_hash, "labels": len(v.label_set)}
                for v in versions
            ]
        )  # fmt: skip
        return
    table = Table("version", "status", "run", "dataset", "labels", "accuracy", "ECE")
    for v in versions:
        style = "bold green" if v.status == ModelStatus.CHAMPION else None
        table.add_row(
            v.version, v.status, v.run_id or "", (v.dataset_hash or "")[:12],
            str(len(v.label_set)), _metric(v.card, "accuracy"), _metric(v.card, "ece"),
            style=style,
        )  # fmt: skip
    console.print(table)


@registry_app.command("show")
def show_cmd(ctx: typer.Context, version: str, json_out: bool = JSON_OUT) -> None:
    """A version's model card (checksums verified)."""
    from tutorloop.registry.store import get, verify

    v = get(_warehouse(ctx), version)
    card = verify(v.artifact_dir)
    if json_out:
        print_json({"version": v.version, "status": v.status, "card": card})
        return
    console.print(f"[bold]{v.version}[/] ({v.status}) — {v.artifact_dir}")
    for key in ("run_id", "dataset_hash", "base_model", "quantization", "fallback_reason",
                "temperature", "warm_start_from", "seed"):  # fmt: skip
        console.print(f"  {key}: {card.get(key)}")
    console.print(f"  files: {', '.join(sorted(card.get('files', {})))} (checksums verified)")


def _gate_cells(g: Any) -> tuple[str, str, str, str, str]:
    value = "" if g.value is None else f"{g.value:.4g}"
    n = "" if g.n is None else str(g.n)
    interval = "" if g.lower is None else f"[{g.lower:.3g}, {g.upper:.3g}]"
    threshold = "" if g.threshold is None else f"{g.comparator} {g.threshold:g}"
    verdict = {
        "pass": "[green]pass[/]",
        "fail": "[red]FAIL[/]",
        "insufficient": "[yellow]insufficient[/] (warn)" if g.passed else "[red]insufficient[/]",
    }.get(g.verdict, g.verdict)
    return value, n, interval, threshold, verdict


@registry_app.command("gates")
def gates_cmd(
    ctx: typer.Context,
    version: str,
    run: bool = typer.Option(False, "--run", help="export, quantize and evaluate now"),
    json_out: bool = JSON_OUT,
) -> None:
    """Gate results of a version (exit 1 if any failed)."""
    from tutorloop.registry.gates import judged_under, stored_gates
    from tutorloop.registry.lifecycle import evaluate_candidate
    from tutorloop.registry.store import get

    warehouse = _warehouse(ctx)
    get(warehouse, version)
    if run:
        evaluate_candidate(warehouse, settings_of(ctx), version)
    gates = stored_gates(warehouse, version)
    contract, eval_set = judged_under(warehouse, version)
    if json_out:
        print_json([
            {**g.to_dict(), "interval": [g.lower, g.upper], "contract_hash": contract,
             "eval_hash": eval_set}
            for g in gates
        ])  # fmt: skip
    else:
        title = f"{version}: contract {(contract or '-')[:12]}, eval set {(eval_set or '-')[:12]}"
        table = Table("gate", "value", "n", "95% interval", "threshold", "verdict", "clause",
                      "detail", title=title)  # fmt: skip
        for g in gates:
            table.add_row(g.gate, *_gate_cells(g), g.clause, g.detail)
        console.print(table)
    if not gates:
        fail(f"{version} has no gate results; run `tutorloop registry gates {version} --run`")
    if not all(g.passed for g in gates):
        raise typer.Exit(1)


@registry_app.command("promote")
def promote_cmd(
    ctx: typer.Context,
    version: str,
    force: bool = typer.Option(False, "--force", help="promote despite failed gates"),
    reason: str = typer.Option("", "--reason", help="why (required with --force)"),
    shadow: bool = typer.Option(False, "--shadow", help="score it on live traffic, never answer"),
    canary: float = typer.Option(0.0, "--canary", help="answer this % of users (sticky) with it"),
    auto_promote_after: str = typer.Option(
        "",
        "--auto-promote-after",
        help="with --shadow/--canary: promote once it held this "
        "long (e.g. 1h); default: by command (`registry canary promote`)",
    ),
    actor: str = _ACTOR,
    json_out: bool = JSON_OUT,
) -> None:
    """Make VERSION the champion (refused when a gate failed, unless --force --reason), or
    start it as a shadow or canary next to the champion."""
    from tutorloop.registry.lifecycle import promote

    if shadow or canary or auto_promote_after:
        _start_rollout(ctx, version, shadow, canary, auto_promote_after, force, reason, actor)
        return
    change = promote(
        _warehouse(ctx), settings_of(ctx), version, actor=actor or getpass.getuser(),
        reason=reason or None, force=force,
    )  # fmt: skip
    if json_out:
        print_json(change.to_dict())
        return
    forced = " (forced)" if change.forced else ""
    console.print(f"promoted {change.to_version}{forced}; previous champion: {change.from_version}")


def _start_rollout(
    ctx: typer.Context, version: str, shadow: bool, canary: float, after: str, force: bool,
    reason: str, actor: str,
) -> None:  # fmt: skip
    from tutorloop.privacy.erasure import parse_duration
    from tutorloop.registry.rollout import start_rollout

    if shadow == bool(canary):
        fail("choose one of --shadow and --canary PCT")
    state = start_rollout(
        _warehouse(ctx), settings_of(ctx), version, mode="shadow" if shadow else "canary",
        percent=canary, actor=actor or getpass.getuser(), reason=reason or None, force=force,
        auto_promote_after_s=parse_duration(after).total_seconds() if after else None,
    )  # fmt: skip
    share = f" for {state.percent:g}% of users" if state.mode == "canary" else ""
    console.print(f"{state.mode} of {version}{share} next to {state.champion}; watch it with "
                  "`tutorloop registry canary status`", highlight=False)  # fmt: skip


@registry_app.command("rollback")
def rollback_cmd(
    ctx: typer.Context,
    to: str = typer.Option("", "--to", help="version to return to; default: the previous one"),
    reason: str = typer.Option("", "--reason", help="why (recorded)"),
    force: bool = typer.Option(
        False, "--force", help="allow a --to version that never served and did not pass its gates"
    ),
    actor: str = _ACTOR,
    json_out: bool = JSON_OUT,
) -> None:
    """Return to the previous champion (or --to VERSION). Servers switch within seconds."""
    from tutorloop.registry.lifecycle import rollback

    change = rollback(
        _warehouse(ctx), settings_of(ctx), actor=actor or getpass.getuser(),
        to=to or None, reason=reason or None, force=force,
    )  # fmt: skip
    if json_out:
        print_json(change.to_dict())
        return
    console.print(f"rolled back {change.from_version} → {change.to_version}")


@registry_app.command("refit-erased")
def refit_erased_cmd(ctx: typer.Context, erasure_id: str, json_out: bool = JSON_OUT) -> None:
    """Rebuild, without the erased rows, the memory and open-set scorer of every version an
    erasure marks (what `privacy forget` does; for a retry after the store was unreachable)."""
    from tutorloop.registry.erasure_models import reach_models

    models = reach_models(settings_of(ctx), _warehouse(ctx), erasure_id)
    if json_out:
        print_json(models.to_dict())
        return
    console.print(
        f"marked {len(models.marked)}, rebuilt {', '.join(models.refitted) or 'none'}"
        + (f"; champion {models.republished} republished" if models.republished else ""),
        highlight=False,
    )


@registry_app.command("history")
def history_cmd(
    ctx: typer.Context,
    at: str = typer.Option("", "--at", help="ISO time: which version was champion then"),
    json_out: bool = JSON_OUT,
) -> None:
    """Every promotion and rollback: who, when, why."""
    from tutorloop.registry.lifecycle import champion_at, history

    warehouse = _warehouse(ctx)
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at must be an ISO time like 2026-11-29T10:00:00+00:00, got {at!r}", 2)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        version = champion_at(warehouse, when)
        if json_out:
            print_json({"at": when.isoformat(), "champion": version})
        else:
            console.print(f"champion at {when.isoformat()}: {version or 'none'}")
        return
    changes = history(warehouse)
    if json_out:
        print_json([c.to_dict() for c in changes])
        return
    table = Table("time", "action", "from", "to", "actor", "reason", "forced")
    for c in changes:
        table.add_row(
            f"{c.ts:%Y-%m-%d %H:%M:%S}", c.action, c.from_version or "", c.to_version,
            c.actor, c.reason or "", "yes" if c.forced else "",
        )  # fmt: skip
    console.print(table)


@registry_app.command("diff")
def diff_cmd(ctx: typer.Context, v1: str, v2: str, json_out: bool = JSON_OUT) -> None:
    """What differs between two versions: data, settings, metrics, gates."""
    from tutorloop.infra.settings import flatten
    from tutorloop.registry.gates import stored_gates
    from tutorloop.registry.store import get

    warehouse = _warehouse(ctx)
    a, b = get(warehouse, v1), get(warehouse, v2)
    rows: list[tuple[str, Any, Any]] = []
    for key in ("dataset_hash", "base_model", "quantization", "temperature", "warm_start_from"):
        rows.append((key, a.card.get(key), b.card.get(key)))
    flat_a = dict(flatten({"hyperparameters": a.card.get("hyperparameters", {})}))
    flat_b = dict(flatten({"hyperparameters": b.card.get("hyperparameters", {})}))
    rows += [(k, flat_a.get(k), flat_b.get(k)) for k in sorted(set(flat_a) | set(flat_b))
             if flat_a.get(k) != flat_b.get(k)]  # fmt: skip
    ma = dict(flatten({"metrics": a.card.get("metrics", {})}))
    mb = dict(flatten({"metrics": b.card.get("metrics", {})}))
    rows += [(k, ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb))
             if k.startswith(("metrics.eval.", "metrics.validation_calibrated."))]  # fmt: skip
    ga = {g.gate: g.value for g in stored_gates(warehouse, v1)}
    gb = {g.gate: g.value for g in stored_gates(warehouse, v2)}
    rows += [(f"gate.{k}", ga.get(k), gb.get(k)) for k in sorted(set(ga) | set(gb))]
    rows.append(("labels", len(a.label_set), len(b.label_set)))
    if json_out:
        print_json([{"key": k, v1: x, v2: y} for k, x, y in rows])
        return
    table = Table("", v1, v2)
    for key, x, y in rows:
        style = "yellow" if x != y else None
        table.add_row(key, _fmt(x), _fmt(y), style=style)
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@lineage_app.command("prediction")
def lineage_prediction(ctx: typer.Context, event_id: str, json_out: bool = JSON_OUT) -> None:
    """A prediction → model version → training run → dataset → policy checks and consent."""
    from tutorloop.registry.lineage import prediction_lineage

    data = prediction_lineage(_warehouse(ctx), event_id)
    if json_out:
        print_json(data)
        return
    console.print(
        f"prediction {event_id} at {data['ts']}: {data['label']} ({data['confidence']:.3f}) "
        f"by model {data['model_version']}"
    )
    console.print(
        f"  consent for training: {data['consent_training']}; captured: {data['captured']} "
        f"({data['capture_reason'] or 'no rule fired'}); policy {data['policy_version']}"
    )
    if data["case"]:
        console.print(
            f"  case {data['case']['case_id']}: scrub findings {data['case']['scrub_findings']}"
        )
    model = data["model"]
    if model:
        console.print(
            f"  model {model['version']} ({model['status']}) ← run {model['run_id']} ← dataset "
            f"{model['dataset_hash']} ({model['n_train']} train rows); base {model['base_model']},"
            f" {model['quantization']}, git {model['git_commit']}, DP epsilon {model['dp_epsilon']}"
        )
    else:
        console.print("  model version not in this registry")


@lineage_app.command("user")
def lineage_user(ctx: typer.Context, user_id: str, json_out: bool = JSON_OUT) -> None:
    """A user's cases, the datasets that used them and the models trained on those."""
    from tutorloop.registry.lineage import user_lineage

    data = user_lineage(_warehouse(ctx), user_id)
    if json_out:
        print_json(data)
        return
    console.print(
        f"user {user_id}: {data['predictions']} predictions, {data['captured']} captured, "
        f"{len(data['cases'])} cases stored, {len(data['erasures'])} erasures"
    )
    table = Table("dataset", "split", "cases", "models")
    for row in data["datasets"]:
        table.add_row(row["dataset_hash"][:16], row["split"], str(row["cases"]),
                      ", ".join(row["models"] or []))  # fmt: skip
    console.print(table)


@lineage_app.command("model")
def lineage_model(ctx: typer.Context, version: str, json_out: bool = JSON_OUT) -> None:
    """Full provenance of a model version."""
    from tutorloop.registry.lineage import model_lineage

    data = model_lineage(_warehouse(ctx), version)
    if json_out:
        print_json(data)
        return
    console.print(
        f"[bold]{version}[/] ({data['status']}): run {data['run_id']}, dataset "
        f"{data['dataset_hash']}, base {data['base_model']} ({data['quantization']}), "
        f"seed {data['seed']}, git {data['git_commit']}, warm start from {data['warm_start_from']}"
    )
    console.print(f"  dataset rows: {json.dumps(data['dataset_sources'], default=str)}")
    console.print(f"  teachers: {json.dumps(data['teachers'], default=str)}")
    console.print(f"  consent: {json.dumps(data['consent'], default=str)}")
    verdicts = ", ".join(f"{g['gate']}={'pass' if g['passed'] else 'FAIL'}" for g in data["gates"])
    console.print(f"  DP epsilon: {data['dp_epsilon']}; gates: {verdicts}")
    for p in data["promotions"]:
        console.print(f"  {p['ts']}: {p['action']} {p['from_version']} → {p['to_version']} "
                      f"by {p['actor']} ({p['reason'] or ''})")  # fmt: skip
