"""A scrubber with a bug, for the poison-record tests: it raises on one odd Unicode sequence.

Loaded by a worker subprocess through ``privacy.scrubber = "tests.poison_scrubber:BreaksOnMarker"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tutorloop.privacy.scrubber import RegexScrubber, ScrubResult

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

MARKER = "\u2067poison\u2069"


class BreaksOnMarker(RegexScrubber):
    def scrub_batch(self, texts: Sequence[str]) -> list[ScrubResult]:
        for text in texts:
            if MARKER in text:
                raise UnicodeError(f"cannot scrub {text!r}")
        return super().scrub_batch(texts)


def poisoned_worker(stream_env: dict[str, str], log_path: Path) -> WorkerProcess:
    """A real worker subprocess whose scrubber is :class:`BreaksOnMarker` (the plugin setting)."""
    from tests.conftest import REPO, WorkerProcess

    return WorkerProcess(
        stream_env, log_path, PYTHONPATH=str(REPO),
        TUTORLOOP_PRIVACY__SCRUBBER="tests.poison_scrubber:BreaksOnMarker",
    )  # fmt: skip
