"""`tutorloop demo`."""

from __future__ import annotations

from pathlib import Path

import typer

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "banking77"


def demo(
    data: Path = typer.Option(
        _SHARED / "train.csv", "--data", help="labeled CSV: seed, pool, traffic"
    ),
    test: Path = typer.Option(_SHARED / "test.csv", "--test", help="held-out labeled CSV"),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str | None = typer.Option(
        None, "--label-col", help="default: label/category/intent"
    ),
    cycles: int = typer.Option(2, "--cycles", min=1, max=20, help="weekly retrain cycles"),
    seed_per_label: int = typer.Option(10, "--seed-per-label", min=1),
    pool: int = typer.Option(3000, "--pool", min=10, help="labeled rows the teacher is fit on"),
    dp_epsilon: float | None = typer.Option(
        None,
        "--dp-epsilon",
        min=0.01,
        help="train on captured (private) rows with DP; the epsilon the whole demo may spend, "
        "split evenly over its weekly retrains",
    ),
    min_parity: float | None = typer.Option(
        None, "--min-parity", hidden=True, help="ignored: the demo runs the contract's gates"
    ),
    holdout_intents: float = typer.Option(
        0.0,
        "--holdout-intents",
        min=0.0,
        max=0.9,
        help="share of intents left out of every stage and tested as out of scope (seeded)",
    ),
    quick: bool = typer.Option(False, "--quick", help="small and fast (CI smoke test)"),
    out: Path = typer.Option(Path("tutorloop-demo"), "--out", help="report and data folder"),
) -> None:
    """Run the whole loop end to end on the embedded default and write a report."""
    from tutorloop.demo.report import print_table
    from tutorloop.demo.results import DemoOptions
    from tutorloop.demo.run import run_demo
    from tutorloop.infra.cli_common import console

    options = DemoOptions(
        data=data, test=test, out=out, text_col=text_col, label_col=label_col, cycles=cycles,
        seed_per_label=seed_per_label, pool=pool, dp_epsilon=dp_epsilon, quick=quick,
        holdout_intents=holdout_intents,
    )  # fmt: skip
    if min_parity is not None:
        console.print("--min-parity is ignored: the demo gates with the registry's defaults "
                      "(the contract's parity clause); it will be removed")  # fmt: skip
    if quick:
        options.cycles = min(cycles, 1) if cycles == 2 else cycles
        options.pool = min(pool, 1000)
        options.seed_per_label = min(seed_per_label, 5)
        options.eval_per_label = 3
        options.traffic = 1500
    result = run_demo(options)
    print_table(result)
    console.print(f"report: {result.report}")
