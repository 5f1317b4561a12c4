"""Rewrite a version's folder without ever exposing a half-written one.

Re-running a version's gates re-exports its ONNX files, recalibrates it and rewrites its card.
That work happens in a copy (``<models>/.staging/<version>-<pid>``); the copy then replaces the
folder in one step: on Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two directories
atomically, elsewhere two renames leave the folder missing for an instant (never half
written). A failure before the swap leaves the original untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (38, 22):  # ENOSYS, EINVAL: the kernel or filesystem cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(a))
    return True


@contextmanager
def rewritten_copy(folder: Path) -> Iterator[Path]:
    """Yield a copy of ``folder`` to rewrite; on success it replaces ``folder``."""
    staging = folder.parent / ".staging" / f"{folder.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not _exchange(staging, folder):
        old = staging.with_name(staging.name + ".old")
        folder.rename(old)
        staging.rename(folder)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)
