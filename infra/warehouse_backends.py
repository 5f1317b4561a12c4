"""Open the configured warehouse: the DuckDB file (default) or a PostgreSQL database."""

from __future__ import annotations

import os

from tutorloop.infra.pg_warehouse import PostgresWarehouse
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse ``settings`` name: PostgreSQL when ``warehouse.url`` is set (several hosts
    share it), else the DuckDB file at ``warehouse.path`` (one host)."""
    w = settings.warehouse
    if w.url is not None:
        password = os.environ.get(w.password_env) if w.password_env else None
        return PostgresWarehouse(w.url, password=password, timeout_s=w.lock_timeout_s)
    return Warehouse(
        settings.warehouse_path,
        lock_timeout_s=w.lock_timeout_s,
        retry_initial_s=w.retry_initial_s,
        retry_max_s=w.retry_max_s,
    )
