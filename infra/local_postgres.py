"""A throwaway local PostgreSQL server: ``initdb`` into a folder, ``pg_ctl start`` on a free port.

For tests, benchmarks and single-host trials of the PostgreSQL warehouse. It uses the Debian
``postgresql`` package's binaries (``make setup`` installs the package when they are missing).
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user on a
folder it owns. Trust authentication, bound to loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.local_processes import LOOPBACK, free_port


class LocalPostgresError(TutorloopError):
    """The local PostgreSQL server could not start or stop; the message says why."""


@dataclass(frozen=True)
class LocalPostgres:
    data_dir: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: Debian's versioned folder first, then PATH."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise LocalPostgresError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; `make setup` installs "
        "the Debian postgresql package"
    )


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, timeout_s: float) -> None:
    done = subprocess.run(
        _as_server_user(cmd), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LocalPostgresError(f"{what} failed: {detail[-1] if detail else done.returncode}")


def start_local_postgres(
    root: Path, *, fsync: bool = True, timeout_s: float = 60.0
) -> LocalPostgres:
    """Create a cluster under ``root`` (if new) and start it on a free loopback port.

    ``fsync=False`` is for tests only: a crash of the machine can then lose committed data."""
    bin_dir = postgres_bin_dir()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    if not (data_dir / "PG_VERSION").is_file():
        _run([str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--no-sync"], "initdb", timeout_s)  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses={LOOPBACK}"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
          str(root / "postgres.log"), "-w", "-t", str(int(timeout_s)), "start"],
         "pg_ctl start", timeout_s + 5)  # fmt: skip
    return LocalPostgres(data_dir=data_dir, port=port, bin_dir=bin_dir)


def stop_local_postgres(server: LocalPostgres, *, timeout_s: float = 60.0) -> None:
    _run([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w",
          "stop"], "pg_ctl stop", timeout_s)  # fmt: skip
