"""What tutorloop never lets a log carry, whatever tutorloop's own log level.

At DEBUG, the Kafka clients log message values in several places: kafka-python's protocol
parser dumps every request and response as raw bytes (``Send: bytearray(b'...')``), its
producer and sender log each record and each ``ProduceRequest`` with the values, and aiokafka's
producer logs ``Sending (key=... value=...)``. With ``log_level = "DEBUG"`` a prediction's raw
text landed in the log (``tests/test_log_hygiene.py`` shows it). Filtering single messages is
whack-a-mole across two client libraries, so the ``kafka`` and ``aiokafka`` loggers are capped
at INFO when the package is imported (the Python API as well as the CLI). A host that lowers
those loggers' level itself asks for the clients' wire dumps, payloads included.
"""

from __future__ import annotations

import logging

_CLIENT_LOGGERS = ("kafka", "aiokafka")


def install() -> None:
    """Cap the Kafka clients' loggers at INFO (idempotent; a stricter level is kept)."""
    for name in _CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (0) included
            logger.setLevel(logging.INFO)
