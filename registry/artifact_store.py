"""The S3-compatible artifact store: model versions and the champion and rollout pointers,
shared with serving replicas and trainers on other hosts (``registry.artifact_store =
"s3://bucket/prefix"``; the local folder stays the registry's working copy).

Layout under ``s3://bucket/prefix/``:

- ``blobs/sha256/<hex>``: file contents, content-addressed: uploaded once, never rewritten, so
  a version that shares files with another (a tokenizer) stores them once;
- ``versions/<version>.json``: the version's model card, which lists every file's sha256;
- ``champion.json`` and ``rollout.json``: small pointers naming a version and the sha256 of its
  card. One PUT replaces an object atomically (readers see the old or the new pointer, never a
  mix), and a writer uploads every blob and the card *before* the pointer, so a pointer never
  names something missing.

A reader checks the card against the pointer's sha256 and every file against the card while
downloading into ``<data_dir>/artifacts/cache/<version>``, then renames the folder into place
and loads it with the usual checksum verification: a tampered blob is refused and the replica
keeps serving what it has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.registry.store import CARD, ArtifactIntegrityError, verify

CACHE = "cache"


class StoreUnavailableError(TutorloopError):
    """The artifact store could not be reached or answered with an error (retry later)."""


class ArtifactStore:
    """One bucket and prefix on an S3-compatible server (boto3; credentials from the
    environment, as every AWS tool reads them)."""

    def __init__(self, url: str, *, endpoint_url: str = "", region: str = "us-east-1") -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StoreUnavailableError(
                "registry.artifact_store needs boto3: pip install 'tutorloop[serving]'"
            ) from None

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._s3 = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region,
            config=Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 3}),
        )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore | None:
        cfg = settings.registry
        if not cfg.artifact_store:
            return None
        return cls(cfg.artifact_store, endpoint_url=cfg.s3_endpoint_url, region=cfg.s3_region)

    # -- writing (the registry) ------------------------------------------------------------

    def publish_version(self, folder: Path) -> str:
        """Upload a verified version folder (blobs first, then its card); its card's sha256."""
        card = verify(folder)
        raw = (folder / CARD).read_bytes()
        with self._reaching():
            for name, sha in card.get("files", {}).items():
                key = self._key(f"blobs/sha256/{sha}")
                if not self._exists(key):
                    self._s3.upload_file(str(folder / name), self.bucket, key)
            self._s3.put_object(Bucket=self.bucket, Body=raw,
                                Key=self._key(f"versions/{card['version']}.json"))  # fmt: skip
        return hashlib.sha256(raw).hexdigest()

    def write_pointer(self, name: str, data: dict[str, Any] | None) -> None:
        with self._reaching():
            self._s3.put_object(Bucket=self.bucket, Key=self._key(name),
                                Body=json.dumps(data).encode())  # fmt: skip

    def card_files(self, version: str) -> dict[str, str]:
        """The files (name -> sha256) the store's card of ``version`` lists; none if absent."""
        raw = self._get(f"versions/{version}.json", missing_ok=True)
        files = json.loads(raw).get("files", {}) if raw is not None else {}
        return {str(name): str(sha) for name, sha in files.items()}

    def drop_blobs(self, shas: set[str]) -> int:
        """Delete these blobs unless a version's card in the store still lists them (files an
        erasure rebuilt); return how many were deleted."""
        with self._reaching():
            paginator = self._s3.get_paginator("list_objects_v2")
            listed = set()
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("versions/")):
                for item in page.get("Contents", []):
                    card = json.loads(self._get(item["Key"].removeprefix(self.prefix)))
                    listed.update(card.get("files", {}).values())
            unused = sorted(shas - listed)
            for sha in unused:
                self._s3.delete_object(Bucket=self.bucket, Key=self._key(f"blobs/sha256/{sha}"))
        return len(unused)

    # -- reading (serving replicas) ----------------------------------------------------------

    def read_pointer(self, name: str) -> dict[str, Any] | None:
        body = self._get(name, missing_ok=True)
        data = json.loads(body) if body is not None else None
        return data if isinstance(data, dict) else None

    def fetch_version(self, version: str, card_sha256: str, cache: Path) -> Path:
        """The version's folder in ``cache``, downloaded and checked (reused when present)."""
        target = cache / version
        if target.is_dir():
            try:
                verify(target)
                # The same version republished (files an erasure rebuilt) has another card.
                if hashlib.sha256((target / CARD).read_bytes()).hexdigest() == card_sha256:
                    return target
            except ArtifactIntegrityError:
                pass
            shutil.rmtree(target, ignore_errors=True)
        raw = self._get(f"versions/{version}.json")
        if hashlib.sha256(raw).hexdigest() != card_sha256:
            raise ArtifactIntegrityError(f"{self.url}: the card of {version} does not match its "
                                         "pointer")  # fmt: skip
        card = json.loads(raw)
        staging = cache / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name, sha in card.get("files", {}).items():
                data = self._get(f"blobs/sha256/{sha}")
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ArtifactIntegrityError(f"{self.url}: {version}/{name} does not match "
                                                 "its checksum")  # fmt: skip
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            (staging / CARD).write_bytes(raw)
            verify(staging)
            staging.replace(target)  # another replica process may have won: theirs is as good
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise StoreUnavailableError(f"{self.url}: {exc}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @overload
    def _get(self, name: str) -> bytes: ...
    @overload
    def _get(self, name: str, *, missing_ok: bool) -> bytes | None: ...

    def _get(self, name: str, *, missing_ok: bool = False) -> bytes | None:
        """An object's bytes; a missing one is None (``missing_ok``) or an integrity error."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=self._key(name))[
                "Body"
            ].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                if missing_ok:
                    return None
                raise ArtifactIntegrityError(f"{self.url}: {name} is missing") from None
            raise StoreUnavailableError(f"{self.url}: {exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"{self.url}: {exc}") from None
        return body

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError:
            return False


def cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "artifacts" / CACHE
