"""The scrubber the settings name: regex by default, Presidio (spaCy NER + regex) when configured.

Its own module so that :mod:`scrubber` (the protocol and the regex pass) and
:mod:`presidio_scrubber` (which runs the regex pass too) do not import each other.
"""

from __future__ import annotations

import importlib
from typing import cast

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.privacy.scrubber import RegexScrubber, Scrubber


class ScrubberLoadError(TutorloopError):
    """``privacy.scrubber`` names a ``module:Factory`` that cannot be loaded."""


def configured_scrubber(settings: PrivacySettings) -> Scrubber:
    """The scrubber named by ``privacy.scrubber`` (Presidio loads spaCy: build it once)."""
    if settings.scrubber == "regex":
        return RegexScrubber()
    if ":" in settings.scrubber:
        return _plugin(settings.scrubber)
    from tutorloop.privacy.presidio_scrubber import PresidioScrubber

    return PresidioScrubber(settings.spacy_model, scrub_coarse_places=settings.scrub_coarse_places)


def _plugin(spec: str) -> Scrubber:
    """A scrubber of the operator's own: ``module:Factory`` (a class or a function)."""
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        scrubber = factory()
    except (ImportError, AttributeError, TypeError) as exc:
        raise ScrubberLoadError(f"privacy.scrubber {spec!r} cannot be loaded: {exc}") from exc
    if not all(hasattr(scrubber, name) for name in ("scrub_batch", "spans_batch")):
        raise ScrubberLoadError(
            f"privacy.scrubber {spec!r} is not a scrubber (needs scrub_batch and spans_batch)"
        )
    return cast(Scrubber, scrubber)
