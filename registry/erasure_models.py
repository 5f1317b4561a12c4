"""Erasure reaching models: files derived row by row are rebuilt without the erased rows.

The versions an erasure marks (:mod:`registry.erasure_marks`) keep their weights, which are
retrained, not edited. What they ship that holds the training rows one by one or nearly so —
the retrieval memory (one embedding per training row) and the open-set scorer (class means
and a covariance of those embeddings: a label with one row publishes that row's embedding) —
is refitted on the version's rows as the warehouse holds them now, the erased user's gone, in
a copy of the version's folder that then replaces it. With an artifact store the version is
uploaded again and the blobs of the replaced files are deleted unless another version's card
still lists them; a champion is republished, so replicas reload it (a replica's cache of that
version is replaced when its card changes); a shadow or canary of it is ended. Rejected
versions never serve and are left; DP versions ship nothing fitted on private rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import ModelStatus, RolloutOutcome
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.artifact_store import ArtifactStore
from tutorloop.registry.contract import Contract, load_contract
from tutorloop.registry.export import fit_on_embeddings
from tutorloop.registry.lifecycle import publish_pointer
from tutorloop.registry.onnx_model import INT8, MEMORY, OPEN_SET
from tutorloop.registry.rewrite import rewritten_copy
from tutorloop.registry.rollout import end_rollout, read_rollout
from tutorloop.registry.store import CARD, ModelVersion, UnknownVersionError, get, write_card
from tutorloop.registry.version_rows import split_rows, trained_with_dp

__all__ = ["ModelErasure", "reach_models"]


@dataclass
class ModelErasure:
    """What an erasure did to the models: for ``privacy forget --json`` and lineage."""

    marked: list[str]  # versions whose weights saw the user's rows (or descend from them)
    refitted: list[str] = field(default_factory=list)  # memory and open-set rebuilt
    unchanged: dict[str, str] = field(default_factory=dict)  # version -> why left as is
    republished: str | None = None  # the champion, published again
    rollout_ended: str | None = None  # the shadow or canary it ran, ended
    blobs_deleted: int = 0  # replaced files deleted from the artifact store

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _left_as_is(version: ModelVersion | None) -> str | None:
    if version is None:
        return "no longer registered"
    if version.status == ModelStatus.REJECTED:
        return "rejected: never serves"
    if not (version.artifact_dir / INT8).is_file():
        return "not exported: ships nothing fitted on rows"
    if trained_with_dp(json.loads((version.artifact_dir / CARD).read_text())):
        return "DP version: ships nothing fitted on private rows"
    return None


def _refit(warehouse: Warehouse, version: ModelVersion, contract: Contract, erasure: str) -> None:
    folder = version.artifact_dir
    rows = {
        split: [(t, label) for _, t, label in split_rows(warehouse, version.dataset_hash, split)]
        for split in ("train", "validation")
    }
    for name in (MEMORY, OPEN_SET):
        (folder / name).unlink(missing_ok=True)
    card = json.loads((folder / CARD).read_text())
    card.pop("files", None)
    max_drop, oos_label = contract.fallback.open_set_max_accuracy_drop, contract.task.oos_label
    card |= fit_on_embeddings(folder, card, rows["train"], rows["validation"], max_drop, oos_label)
    card["erasures_refitted"] = [*card.get("erasures_refitted", []), erasure]
    write_card(folder, card)


def reach_models(settings: Settings, warehouse: Warehouse, erasure_id: str) -> ModelErasure:
    """Rebuild the row-derived files of every version an erasure marks that can still serve."""
    row = warehouse.query("SELECT model_versions FROM erasures WHERE erasure_id = ?", [erasure_id])
    out = ModelErasure(marked=json.loads(row[0][0] or "[]") if row else [])
    contract = load_contract(settings)
    store = ArtifactStore.from_settings(settings)
    replaced: set[str] = set()
    for name in out.marked:
        try:
            version: ModelVersion | None = get(warehouse, name)
        except UnknownVersionError:
            version = None
        why = _left_as_is(version)
        if why is not None or version is None:
            out.unchanged[name] = why or ""
            continue
        # What the store holds too: a retry after a failed upload still finds the old blobs.
        before = [json.loads((version.artifact_dir / CARD).read_text()).get("files", {})]
        before += [store.card_files(name)] if store else []
        with rewritten_copy(version.artifact_dir) as staging:
            _refit(warehouse, replace(version, artifact_dir=staging), contract, erasure_id)
        card = (version.artifact_dir / CARD).read_bytes()
        after = set(json.loads(card).get("files", {}).values())
        replaced |= {sha for files in before for sha in files.values() if sha not in after}
        out.refitted.append(name)
        card_sha256 = store.publish_version(version.artifact_dir) if store else None
        if version.status == ModelStatus.CHAMPION:
            publish_pointer(settings, version, card_sha256=card_sha256)
            out.republished = name
        running = read_rollout(settings)
        if running is not None and running.version == name:
            reason = f"trained on rows of an erased user (erasure {erasure_id})"
            end_rollout(warehouse, settings, RolloutOutcome.ABORTED, actor="erasure", reason=reason)
            out.rollout_ended = name
    if store is not None and replaced:
        out.blobs_deleted = store.drop_blobs(replaced)
    return out
