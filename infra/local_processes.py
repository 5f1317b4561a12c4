"""Local ports and detached child processes: what the embedded services (broker, S3) need.

Processes are identified by pid *and* command line, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from tutorloop.infra.errors import TutorloopError

LOOPBACK = "127.0.0.1"


class NoFreePortError(TutorloopError):
    """No free local port could be found."""


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK, *, with_offset: int = 0) -> int:
    """A port free now on ``host`` (and ``port + with_offset`` too, when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if with_offset == 0:
            return port
        if port + with_offset <= 65535 and port_is_free(port + with_offset, host):
            return port
    raise NoFreePortError(f"could not find a free port on {host}")


def accepts(port: int, timeout: float = 0.2, host: str = LOOPBACK) -> bool:
    """True when something listens on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_runs(pid: int, needle: str) -> bool:
    """True when ``pid`` is alive and its command line mentions ``needle``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return needle.encode() in cmdline


def stop_process(pid: int, needle: str, timeout_s: float = 10.0) -> None:
    if not pid_runs(pid, needle):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_runs(pid, needle) or is_zombie(pid):
            reap(pid)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    reap(pid)


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def reap(pid: int) -> None:
    # The broker is our child when started in this process (tests); reap it so it does not
    # linger as a zombie. From another process this is a no-op.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
