"""The structure the README promises, checked: the warehouse contract, table ownership, private
names, unit sizes, and one installed namespace. (The package layers themselves are
import-linter contracts in pyproject.toml, run by ``make test``.)"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from tests.conftest import REPO
from tutorloop.infra.migrations import migrate
from tutorloop.infra.table_owners import BY_NAME, ERASURE_MODULE, TABLES

if TYPE_CHECKING:
    from tutorloop.evaluation.classifier import Classifier
    from tutorloop.labeling.teacher_local import LocalTeacher
    from tutorloop.registry.onnx_model import OnnxStudent
    from tutorloop.registry.torch_model import TorchStudent
    from tutorloop.streams.emitter import Emitter, PredictionEmitter


def _implement_the_protocols(
    onnx: OnnxStudent, torch: TorchStudent, teacher: LocalTeacher, emitter: PredictionEmitter
) -> tuple[list[Classifier], Emitter]:
    """Checked by mypy (``make typecheck``), never called: a class that drifts from its
    protocol fails the type check here."""
    return [onnx, torch, teacher], emitter


PACKAGES = (
    "infra", "evaluation", "privacy", "labeling", "streams", "registry", "trainer", "serving",
    "loop", "demo",
)  # fmt: skip
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

_WRITE = re.compile(
    r"\b(?:INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)\b|insert_arrow\(\s*\w+,\s*\"(\w+)\""
)


def _modules() -> list[tuple[str, Path]]:
    """(dotted module name, path) of every module of every package, and the CLI root."""
    found = [(f"tutorloop.{p.stem}", p) for p in sorted((REPO / "tutorloop").glob("*.py"))]
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found.append((".".join(("tutorloop", *parts)), path))
    return found


def test_the_contract_lists_every_table_with_its_columns() -> None:
    con = duckdb.connect(":memory:")
    migrate(con)
    schema: dict[str, list[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE' AND table_schema = 'main'"
        " ORDER BY table_name, ordinal_position"
    ).fetchall():
        schema.setdefault(table, []).append(column)
    assert {t.name: list(t.columns) for t in TABLES} == schema
    assert {t.owner for t in TABLES} <= set(PACKAGES)


def test_only_the_owning_package_writes_a_table() -> None:
    strays: list[str] = []
    for module, path in _modules():
        if module == ERASURE_MODULE:
            continue  # erasure must reach every copy, whoever wrote it
        if module == "tutorloop.infra.migrations":
            continue  # a migration moves existing rows into the columns it adds
        package = module.split(".")[1]
        for match in _WRITE.finditer(path.read_text()):
            table = match.group(1) or match.group(2)
            if table in BY_NAME and BY_NAME[table].owner != package:
                strays.append(f"{module} writes {table} (owner: {BY_NAME[table].owner})")
    assert strays == []


def test_no_module_imports_another_packages_private_modules_or_names() -> None:
    strays: list[str] = []
    for module, path in _modules():
        package = module.split(".")[1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[tuple[str, list[str]]]
            if isinstance(node, ast.Import):
                targets = [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [(node.module, [alias.name for alias in node.names])]
            else:
                continue
            for target, names in targets:
                parts = target.split(".")
                if parts[0] != "tutorloop" or len(parts) < 2 or parts[1] == package:
                    continue
                if any(p.startswith("_") and not p.startswith("__") for p in parts[2:]):
                    strays.append(f"{module} imports the private module {target}")
                strays += [f"{module} imports {target}.{n}" for n in names if n.startswith("_")]
    assert strays == []


def test_modules_and_functions_stay_short() -> None:
    long_modules = []
    long_functions = []
    scripts = [(f"bench.{path.stem}", path) for path in sorted((REPO / "bench").glob("*.py"))]
    for module, path in _modules() + scripts:
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}: {length} lines")
    assert long_modules == [] and long_functions == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_installs_one_namespace(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "tutorloop-*"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    [wheel] = tmp_path.glob("tutorloop-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tutorloop"}
    assert "tutorloop = tutorloop.cli:main" in entry_points
    for package in PACKAGES:
        assert f"tutorloop/{package}/__init__.py" in names
    assert "tutorloop/py.typed" in names
