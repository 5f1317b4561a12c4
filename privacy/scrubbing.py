"""The scrubber the settings name: regex by default, Presidio (spaCy NER + regex) when configured.

Its own module so that :mod:`scrubber` (the protocol and the regex pass) and
:mod:`presidio_scrubber` (which runs the regex pass too) do not import each other.
"""

from __future__ import annotations

from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.privacy.scrubber import RegexScrubber, Scrubber


def configured_scrubber(settings: PrivacySettings) -> Scrubber:
    """The scrubber named by ``privacy.scrubber`` (Presidio loads spaCy: build it once)."""
    if settings.scrubber == "regex":
        return RegexScrubber()
    from tutorloop.privacy.presidio_scrubber import PresidioScrubber

    return PresidioScrubber(settings.spacy_model, scrub_coarse_places=settings.scrub_coarse_places)
