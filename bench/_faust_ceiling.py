"""An empty faust agent over a topic: how fast faust alone moves events (a bench baseline).

usage: python bench/_faust_ceiling.py BOOTSTRAP TOPIC N DATADIR
Prints `rate <events/s>` once N events went through, then exits.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import faust


def main() -> None:
    bootstrap, topic_name, n, datadir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        web_enabled=False,
        store="memory://",
        datadir=datadir,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        stream_buffer_maxsize=20_000,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "t0": None}

    @app.agent(topic)
    async def drain(stream: Any) -> None:
        async for events in stream.noack_take(5000, within=0.5):
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            for event in events:
                await stream.ack(event)
            state["n"] += len(events)
            if state["n"] >= n:
                print(f"rate {n / (time.perf_counter() - state['t0']):.1f}", flush=True)
                os._exit(0)

    faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
