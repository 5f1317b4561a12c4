"""A separate process that writes to a warehouse, for the concurrency tests.

usage: python -m tests.warehouse_writer PATH MODE ARG
  rows N       insert N erasure rows, one short transaction each
  hold S       hold one write transaction open for S seconds
  loop S       short write transactions back to back for S seconds
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from tutorloop.infra.warehouse import Warehouse

_INSERT = (
    "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, labels_deleted,"
    " dataset_versions, model_versions) VALUES (?, now(), ?, 'test', 0, 0, '[]', '[]')"
)


def main() -> None:
    path, mode, arg = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    wh = Warehouse(path, lock_timeout_s=60)
    who = f"pid{os.getpid()}"
    if mode == "rows":
        for _ in range(int(arg)):
            with wh.transaction() as con:
                con.execute(_INSERT, [str(uuid.uuid4()), who])
    elif mode == "hold":
        with wh.transaction() as con:
            con.execute(_INSERT, [str(uuid.uuid4()), who])
            print("holding", flush=True)
            time.sleep(arg)
    elif mode == "loop":
        end = time.monotonic() + arg
        n = 0
        print("looping", flush=True)
        while time.monotonic() < end:
            with wh.transaction() as con:
                con.execute(_INSERT, [str(uuid.uuid4()), who])
            n += 1
        print(f"wrote {n}", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
