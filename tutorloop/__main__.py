"""``python -m infra`` runs the tutorloop CLI (same as the ``tutorloop`` script)."""

from tutorloop.cli import main

main()
