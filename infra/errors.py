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

    A message tutorloop wrote — its own exception types, or any exception raised by its own
    code — is written to be shown. A library's message may quote what it choked on (a case's
    text, a label, a row), so of those only the type, the OS error code when there is one, and
    the innermost place in tutorloop's code it came through are kept.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).is_relative_to(_PACKAGE)]
    raised_here = bool(ours) and ours[-1] is frames[-1]
    if isinstance(exc, TutorloopError) or type(exc).__module__.startswith("tutorloop."):
        return f"{type(exc).__name__}: {exc}"[:500]
    if raised_here:
        return f"{type(exc).__name__}: {exc}"[:500]
    where = f" in {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    code = f" [{exc.strerror}]" if isinstance(exc, OSError) and exc.strerror else ""
    return f"{type(exc).__name__}{code}{where} (message not stored: it may quote user data)"


# The tutorloop package as imported (its subpackages are reached through it).
_PACKAGE = Path(__file__).parent.parent
