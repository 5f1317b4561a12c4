"""How the cycle reports progress: ``progress(description, total)`` is a context manager that
yields ``advance(n)`` (the CLI's rich bars; nothing by default)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

ProgressFactory = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


def no_progress(
    description: str, total: int | None
) -> AbstractContextManager[Callable[[int], None]]:
    return nullcontext(lambda n: None)
