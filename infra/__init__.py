"""Settings, the warehouse (schema, migrations, connections, the table contract in :mod:`.tables`),
the embedded broker and topics, hashing, batching, local processes.

Bottom layer: imports no other tutorloop package, holds no stage logic.
"""
