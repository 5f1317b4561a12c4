"""The base of every error tutorloop reports to a person as one line."""

from __future__ import annotations

import traceback
from pathlib import Path


class TutorloopError(Exception):
    """An expected failure with a message fit to show as is (no traceback).

    ``exit_code`` is what the CLI exits with: 2 for bad configuration or usage, 1 otherwise.
    """

    exit_code: int = 1


def stored_error(exc: BaseException) -> str:
    """What a warehouse row (a failed run) and its log line may say about ``exc``.

    A message tutorloop wrote (its own exception types) is written to be shown. Any other
    exception's message may quote what it choked on — a case's text, a label, a row — so only
    its type and where it was raised are kept (the innermost frame: file name and line).
    """
    if isinstance(exc, TutorloopError) or type(exc).__module__.startswith("tutorloop."):
        return f"{type(exc).__name__}: {exc}"[:500]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where} (message not stored: it may quote user data)"
