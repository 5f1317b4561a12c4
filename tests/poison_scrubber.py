"""A scrubber with a bug, for the poison-record tests: it raises on one odd Unicode sequence.

Loaded by a worker subprocess through ``privacy.scrubber = "tests.poison_scrubber:BreaksOnMarker"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tutorloop.privacy.scrubber import RegexScrubber, ScrubResult

MARKER = "\u2067poison\u2069"


class BreaksOnMarker(RegexScrubber):
    def scrub_batch(self, texts: Sequence[str]) -> list[ScrubResult]:
        for text in texts:
            if MARKER in text:
                raise UnicodeError(f"cannot scrub {text!r}")
        return super().scrub_batch(texts)
