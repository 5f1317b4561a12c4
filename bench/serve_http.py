"""Benchmark: the HTTP server end to end, the old one against the new one, in the same run.

Each server runs as its own process on the same champion; this process is the client
(``http.client``, keep-alive connections, one per client thread), sending held-out test
queries:

- one client, sequential requests: p50 / p95 latency;
- 8 concurrent clients for ``--seconds``: throughput and p95;

each with keep-alive connections and with a new connection per request (the old server
answers keep-alive clients in two writes, and Nagle's algorithm against the client's delayed
ACK stalls every reply ~40 ms: a defect of the old server, so it is measured both ways).

Rows: the pre-#15 ``ThreadingHTTPServer`` (``bench/_legacy_http_server.py``), the new
Starlette/uvicorn server without events, the new server emitting events while the broker is
unreachable (everything goes to the spool: the outage path), and the new server with a canary
(a copy of the champion under ``--canary 50``: both models score every request).

Targets (issue #15): single-client p95 <= 5 ms; 8-client throughput >= 1.2x the old server.

    .venv/bin/python bench/serve_http.py [--data-dir DIR] [--requests 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tutorloop.infra.warehouse_backends import open_warehouse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
DATA = REPO.parent / "shared" / "data" / "banking77"


def _free_port() -> int:
    from tutorloop.infra.local_processes import free_port

    return free_port()


def _start(kind: str, data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if kind == "old":
        cmd = [sys.executable, str(REPO / "bench" / "_legacy_http_server.py"), str(data_dir),
               str(port)]  # fmt: skip
    else:
        emit = "--emit" if kind == "new+spool" else "--no-emit"
        cmd = [sys.executable, "-m", "tutorloop", "serve", "--port", str(port), emit]
    env = {**os.environ, **env, "TUTORLOOP_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "warm up")[0]:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def _post(conn: http.client.HTTPConnection, text: str) -> tuple[bool, float]:
    # bytes: http.client sends headers and body in one write (no Nagle/delayed-ACK stall)
    body = json.dumps({"text": text, "user_id": f"u{random.randrange(10_000)}"}).encode()
    started = time.perf_counter()
    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    return reply.status == 200, (time.perf_counter() - started) * 1000


class _Client:
    """Keep-alive (one connection reused) or a new connection per request."""

    def __init__(self, port: int, keep_alive: bool) -> None:
        self.port, self.keep_alive = port, keep_alive
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, text: str) -> tuple[bool, float]:
        if self.keep_alive:
            return _post(self.conn, text)
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        ok = _post(conn, text)[0]
        conn.close()
        return ok, (time.perf_counter() - started) * 1000


def _single(port: int, texts: list[str], n: int, keep_alive: bool) -> dict[str, float]:
    client = _Client(port, keep_alive)
    for text in texts[:20]:
        client.post(text)
    timings = [client.post(texts[i % len(texts)])[1] for i in range(n)]
    client.conn.close()
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p95_ms": float(np.percentile(timings, 95)),
    }


def _concurrent(
    port: int, texts: list[str], clients: int, seconds: float, keep_alive: bool
) -> dict[str, float]:
    timings: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = threading.Event()

    def client(k: int) -> None:
        http_client = _Client(port, keep_alive)
        i = k
        while not stop.is_set():
            ok, ms = http_client.post(texts[i % len(texts)])
            timings[k].append(ms)
            errors[k] += int(not ok)
            i += clients
        http_client.conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    flat = [ms for part in timings for ms in part]
    return {"req_per_s": len(flat) / seconds, "p95_ms": float(np.percentile(flat, 95)),
            "errors": float(sum(errors))}  # fmt: skip


def _canary(data_dir: Path) -> None:
    """Put a copy of the champion in canary at 50% (forced: the copy has no gate results)."""
    from serve import _second_champion  # the same copy the rollback timing uses

    from tutorloop.infra.settings import load_settings
    from tutorloop.registry.lifecycle import rollback
    from tutorloop.registry.rollout import start_rollout
    from tutorloop.registry.store import champion

    settings = load_settings(data_dir=data_dir)
    warehouse = open_warehouse(settings)
    current = champion(warehouse)
    assert current is not None
    copy = _second_champion(warehouse, settings, current.version)
    assert copy is not None
    rollback(warehouse, settings, actor="bench", reason="bench")
    start_rollout(warehouse, settings, copy, mode="canary", percent=50, actor="bench",
                  reason="bench: canary overhead", force=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a data dir with a champion (copied)")
    parser.add_argument("--per-label", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1000, help="single-client requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="concurrent phase length")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DATA / "test.csv")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tutorloop.labeling.labeled_csv import read_labeled_csv

    tmp = Path(tempfile.mkdtemp(prefix="serve-http-"))
    data_dir = tmp / "data"
    if args.data_dir:
        shutil.copytree(args.data_dir, data_dir, ignore=shutil.ignore_patterns("broker", "faust"))
    else:
        from serve import _prepare

        _prepare(args, data_dir)
    texts = read_labeled_csv(args.test).texts
    random.Random(3).shuffle(texts)
    unreachable = {"TUTORLOOP_BROKER__BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}"}
    results: dict[str, dict[str, float]] = {}
    for kind in ("old", "new", "new+spool", "new+canary"):
        if kind == "new+canary":
            _canary(data_dir)
        port = _free_port()
        proc = _start(kind, data_dir, port, unreachable)
        try:
            modes = (True, False) if kind in ("old", "new") else (True,)
            for keep_alive in modes:
                name = kind if keep_alive else f"{kind} (conn/req)"
                many = _concurrent(port, texts, args.clients, args.seconds, keep_alive)
                results[name] = {**_single(port, texts, args.requests, keep_alive),
                                 **{f"c{args.clients}_{k}": v for k, v in many.items()}}  # fmt: skip  # noqa: E501
        finally:
            proc.terminate()
            proc.wait(30)
    _print(results, args)
    shutil.rmtree(tmp, ignore_errors=True)


def _print(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    c = args.clients
    print(f"{args.requests} single-client requests; {c} clients for {args.seconds:g} s")
    print(f"{'server':22} {'p50 ms':>8} {'p95 ms':>8} {f'{c}-client req/s':>16} "
          f"{f'{c}-client p95':>14} {'errors':>7}")  # fmt: skip
    for kind, r in results.items():
        print(f"{kind:22} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r[f'c{c}_req_per_s']:>16.0f} "
              f"{r[f'c{c}_p95_ms']:>14.2f} {r[f'c{c}_errors']:>7.0f}")  # fmt: skip
    for suffix in ("", " (conn/req)"):
        old, new = results[f"old{suffix}"], results[f"new{suffix}"]
        ratio = new[f"c{c}_req_per_s"] / old[f"c{c}_req_per_s"]
        print(f"{c}-client throughput, new / old{suffix or ' (keep-alive)'}: {ratio:.2f}x")
    new = results["new"]
    print(f"single-client p95, new: {new['p95_ms']:.2f} ms (target <= 5)")
    spool = results["new+spool"]["p95_ms"] - new["p95_ms"]
    print(f"spooling (broker unreachable) adds {spool:+.2f} ms to single-client p95")
    print(
        f"canary (2 models per request) adds "
        f"{results['new+canary']['p95_ms'] - new['p95_ms']:+.2f} ms to single-client p95"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
