"""Where a replica learns what to serve: the champion and rollout pointers, read from the local
folder or, with ``registry.artifact_store``, from the store (versions downloaded into the
replica's cache and checked before they load)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tutorloop.infra.settings import Settings
from tutorloop.registry.artifact_store import ArtifactStore, cache_dir
from tutorloop.registry.lifecycle import POINTER, read_pointer
from tutorloop.registry.rollout import POINTER as ROLLOUT_POINTER
from tutorloop.registry.rollout import RolloutState, read_rollout


@dataclass(frozen=True)
class Published:
    """A version a pointer names; ``folder()`` gives its files (downloading them if needed)."""

    version: str
    key: str  # changes whenever the pointed-to content may have changed
    folder: Callable[[], Path]


class Pointers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ArtifactStore.from_settings(settings)

    @property
    def where(self) -> str:
        return self.store.url if self.store else str(self.settings.models_artifacts_dir)

    def champion(self) -> Published | None:
        if self.store is None:
            local = read_pointer(self.settings)
            if not local or not local.get("version") or not local.get("artifact_dir"):
                return None
            folder = Path(local["artifact_dir"])
            # A re-publication (a fixed folder promoted again) is retried after a failed load.
            key = f"{folder}@{local.get('published_at')}"
            return Published(local["version"], key, lambda: folder)
        remote = self.store.read_pointer(POINTER)
        if not remote or not remote.get("version"):
            return None
        return self._remote(remote["version"], remote.get("card_sha256") or "")

    def rollout(self) -> tuple[RolloutState, Published] | None:
        if self.store is None:
            state = read_rollout(self.settings)
            if state is None:
                return None
            folder = Path(state.artifact_dir)
            # The card changes when an erasure rebuilt the version's files: reload then.
            key = f"{state.rollout_id}@{state.card_sha256}"
            return state, Published(state.version, key, lambda: folder)
        data = self.store.read_pointer(ROLLOUT_POINTER)
        if not data:
            return None
        state = RolloutState(**data)
        remote = self._remote(state.version, state.card_sha256)
        return state, Published(remote.version, f"{state.rollout_id}@{remote.key}", remote.folder)

    def _remote(self, version: str, card_sha256: str) -> Published:
        store = self.store
        assert store is not None
        cache = cache_dir(self.settings)
        cache.mkdir(parents=True, exist_ok=True)
        return Published(version, f"{version}:{card_sha256}",
                         lambda: store.fetch_version(version, card_sha256, cache))  # fmt: skip
