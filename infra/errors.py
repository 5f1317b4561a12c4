"""The base of every error tutorloop reports to a person as one line."""

from __future__ import annotations


class TutorloopError(Exception):
    """An expected failure with a message fit to show as is (no traceback).

    ``exit_code`` is what the CLI exits with: 2 for bad configuration or usage, 1 otherwise.
    """

    exit_code: int = 1
