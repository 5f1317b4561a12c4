"""``python -m infra`` runs the tutorloop CLI (same as the ``tutorloop`` script)."""

from infra.cli import main

main()
