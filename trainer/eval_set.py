"""The gold evaluation set: frozen (a case once held out stays held out), stratified to the
contract's minimum rows per label, never a case any model in the lineage trained on, and
versioned by the hash of its (case_id, label) pairs."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tutorloop.infra.hashing import eval_set_digest
from tutorloop.infra.tables import IMPORTED_REASONS, TRAIN_ONLY, Split
from tutorloop.infra.warehouse import Warehouse
from tutorloop.trainer.dataset_spec import Candidate, DatasetSpec, Row, unit


@dataclass(frozen=True)
class History:
    trained: set[str]  # cases some earlier version trained on (train or validation split)
    evaluated: set[str]  # cases some earlier version held out for evaluation


def history(warehouse: Warehouse) -> History:
    """Cases trained on include the sources of the synthetic cases trained on: a paraphrase
    trained on would score the model on its own training data were its source evaluated."""
    rows = warehouse.query(
        "SELECT DISTINCT case_id, split = ? FROM dataset_members UNION"
        " SELECT DISTINCT s.source_case_id, false FROM dataset_members d"
        " JOIN synthetic_cases s USING (case_id) WHERE d.split <> ?",
        [Split.EVAL, Split.EVAL],
    )
    return History({str(c) for c, ev in rows if not ev}, {str(c) for c, ev in rows if ev})


def _eval_minimum(spec: DatasetSpec, label: str) -> int:
    return spec.eval_min_oos if label == spec.oos_label else spec.eval_min_per_label


def top_up_eval(
    eval_rows: list[Row],
    pool: list[tuple[Candidate, tuple[str, tuple[float, ...], str]]],
    eval_hashes: set[str],
    spec: DatasetSpec,
    history: History,
) -> dict[str, int]:
    """Stratify: hold out more human-labeled production cases of labels below their minimum
    (``evaluation.min_rows_per_label``, ``min_oos_rows`` for the OOS label), at most half of
    a label's such cases so training keeps the rest. Returns what is still missing per label.
    """
    have = Counter(r.label for r in eval_rows)
    movable: dict[str, list[int]] = defaultdict(list)
    for i, (c, _) in enumerate(pool):
        if (
            c.human is not None
            and c.capture_reason not in IMPORTED_REASONS
            and c.capture_reason not in TRAIN_ONLY
            and c.case_id not in history.trained
            and c.text_hash not in eval_hashes
        ):
            movable[c.human].append(i)
    taken: set[int] = set()
    for label, indexes in movable.items():
        need = _eval_minimum(spec, label) - have[label]
        if need <= 0:
            continue
        indexes.sort(key=lambda i: unit(spec.seed + 5, pool[i][0].case_id))
        for i in indexes[: min(need, len(indexes) // 2)]:
            c = pool[i][0]
            if c.text_hash in eval_hashes:
                continue
            eval_hashes.add(c.text_hash)
            eval_rows.append(Row.gold(c.case_id, c.text, label, spec.labels))
            have[label] += 1
            taken.add(i)
    pool[:] = [item for i, item in enumerate(pool) if i not in taken]
    return {
        label: _eval_minimum(spec, label) - have[label]
        for label in spec.labels
        if have[label] < _eval_minimum(spec, label)
    }


def eval_set_hash(eval_rows: Sequence[Row]) -> str:
    """The evaluation set's version (the digest the gates report)."""
    return eval_set_digest((r.case_id, r.label) for r in eval_rows)
