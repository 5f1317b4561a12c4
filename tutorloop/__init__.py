"""tutorloop: keep a small, fast, private student model learning from production.

One import namespace. Its packages, top to bottom (an import may only point down; the
import-linter contracts in ``pyproject.toml`` enforce it):

- ``tutorloop.cli`` — the ``tutorloop`` command: mounts each package's command group.
- :mod:`tutorloop.demo` — the end-to-end run on the embedded default, and its report.
- :mod:`tutorloop.loop` — the weekly cycle (relabel → dataset → train → register → gate →
  promote) and its schedule.
- :mod:`tutorloop.serving` | :mod:`tutorloop.trainer` — the HTTP runtime; dataset building
  and training.
- :mod:`tutorloop.registry` | :mod:`tutorloop.streams` — versions, export, gates, promotion,
  lineage; event contracts, the emitter and the capture workers.
- :mod:`tutorloop.labeling` — teachers, relabeling, review, gold import; owns cases and labels.
- :mod:`tutorloop.privacy` — scrubbing, consent caps, DP-SGD and its ledger, erasure.
- :mod:`tutorloop.evaluation` — classification metrics and the classifier protocol.
- :mod:`tutorloop.infra` — settings, the warehouse and its contract, the broker, hashing.
"""

from importlib.metadata import PackageNotFoundError, version

from tutorloop.infra import log_hygiene

log_hygiene.install()  # before any Kafka client can log wire bytes

try:
    __version__ = version("tutorloop")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
