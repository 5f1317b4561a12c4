"""Versioned training datasets built from the warehouse, saved under their content hash.

What goes in, in order:

1. **Consent and contribution caps** (``privacy.caps``): only consented cases, at most
   ``max_cases_per_user`` per user (and per tenant) per window.
2. **The fixed gold evaluation set**: rows imported as evaluation data
   (``dataset import --eval``), plus human-labeled production cases whose case-id hash falls
   below ``dataset.eval_fraction``. Membership depends on the case alone, so a case never
   moves between evaluation and training from one version to the next; it is never trained
   on. A case an earlier version trained on (say, teacher-labeled, reviewed by a person later)
   never joins it. Gold imported for training (a seed set) is never held out.
3. **Targets**: a human label alone is one-hot; a teacher label alone is the teacher's soft
   distribution; where both exist the hard label is the human's and the soft target is
   ``human_weight`` x one-hot(human) + (1 - ``human_weight``) x teacher distribution. Where
   several teachers labeled a case, the one people agree with most on spot checks answers.
   **Synthetic cases** (an LLM teacher's paraphrases and contrast edits) are never
   evaluation rows, and train only while their source case is a training row and their
   label is the one they were written for.
4. **Dedup** on ``cases.text_hash`` (lowercased, whitespace-collapsed text): one row per
   normalized text, human-labeled first; texts that are in the evaluation set are dropped.
5. **Replay** against forgetting: "new" rows are those not in the ``previous`` version (by
   default the dataset the current champion was trained on, which the trainer warm-starts
   from); of the rest, ``replay_fraction`` per new row is sampled back in.
6. **Stratified split** into train and validation, per label (synthetic rows: train only).

Every choice is a deterministic function of case ids and the spec, and the version's hash
covers the spec, the label set and every row: the same inputs give the same hash, and
building twice adds nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from tutorloop.infra.tables import (
    PUBLIC_REASONS,
    TRAIN_ONLY,
    CaptureReason,
    LabelSource,
    Split,
)
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.agreement import teacher_weights
from tutorloop.privacy.caps import ContributionCaps, eligible_case_ids
from tutorloop.trainer.dataset_spec import (
    SPLITS,
    Candidate,
    DatasetSpec,
    DatasetVersion,
    EmptyDatasetError,
    Row,
)
from tutorloop.trainer.dataset_spec import (
    unit as _unit,
)
from tutorloop.trainer.eval_set import History, eval_set_hash, top_up_eval
from tutorloop.trainer.eval_set import history as history_of

__all__ = ["SPLITS", "DatasetSpec", "DatasetVersion", "EmptyDatasetError", "Row", "assemble"]


def _load(warehouse: Warehouse, case_ids: Sequence[str], teacher_id: str | None) -> list[Candidate]:
    humans = warehouse.query(
        "WITH h AS (SELECT case_id, arg_max(label, created_at) AS label FROM labels"
        "   WHERE source = 'human' GROUP BY case_id)"
        " SELECT c.case_id, c.text, c.text_hash, h.label, c.capture_reason, s.source_case_id,"
        " s.intended_label FROM cases c LEFT JOIN h USING (case_id)"
        " LEFT JOIN synthetic_cases s USING (case_id)"
        " WHERE c.case_id IN (SELECT unnest(?)) ORDER BY c.case_id",
        [list(case_ids)],
    )
    teachers = _teacher_labels(warehouse, case_ids, teacher_id)
    out: list[Candidate] = []
    for case_id, text, text_hash, human, reason, source, intended in humans:
        teacher = teachers.get(case_id)
        if human is None and teacher is None:
            continue
        label, soft, conf = teacher or (None, None, None)
        out.append(
            Candidate(case_id, text, text_hash, human, label, soft, conf, reason, source, intended)
        )
    return out


def _teacher_labels(
    warehouse: Warehouse, case_ids: Sequence[str], teacher_id: str | None
) -> dict[str, tuple[str, dict[str, float], float | None]]:
    """Per case, one teacher's (label, soft targets, confidence).

    With ``teacher_id`` that teacher's; otherwise, where several teachers labeled a case, the
    one people agree with most on spot checks (:mod:`tutorloop.labeling.agreement`; an
    unchecked teacher counts as 0.5), the latest answer among equals.
    """
    teacher_filter = "AND teacher_id = ?" if teacher_id else ""
    rows = warehouse.query(
        "SELECT case_id, teacher_id, label, soft_targets, confidence, created_at FROM labels"
        f" WHERE source = 'teacher' {teacher_filter} AND case_id IN (SELECT unnest(?))"
        " ORDER BY case_id, created_at",
        [*([teacher_id] if teacher_id else []), list(case_ids)],
    )
    weights = {} if teacher_id else teacher_weights(warehouse)
    best: dict[str, tuple[float, Any]] = {}
    for row in rows:  # ordered by time: a later answer wins ties
        weight = weights.get(row[1], 0.5)
        if row[0] not in best or weight >= best[row[0]][0]:
            best[row[0]] = (weight, row)
    return {
        case_id: (label, json.loads(soft), float(conf) if conf is not None else None)
        for case_id, (_, (_, _, label, soft, conf, _)) in best.items()
    }


def _members(warehouse: Warehouse, dataset_hash: str | None) -> set[str]:
    """Case ids in the train/validation splits of a dataset version."""
    if dataset_hash is None:
        return set()
    rows = warehouse.query(
        "SELECT case_id FROM dataset_members WHERE split <> 'eval' AND dataset_hash = ?",
        [dataset_hash],
    )
    return {case_id for (case_id,) in rows}


def _teacher_distribution(c: Candidate, index: dict[str, int]) -> list[float] | None:
    """The teacher's soft target over the spec's labels, renormalised; None if it has none."""
    known = {k: v for k, v in (c.teacher_soft or {}).items() if k in index}
    total = sum(known.values())
    if total <= 0:
        return None
    dist = [0.0] * len(index)
    for label, p in known.items():
        dist[index[label]] = p / total
    return dist


def _target(c: Candidate, spec: DatasetSpec) -> tuple[str, tuple[float, ...], str] | None:
    index = {label: i for i, label in enumerate(spec.labels)}
    teacher = _teacher_distribution(c, index)
    if c.human is not None:
        if c.human not in index:
            return None
        if teacher is not None and spec.human_weight < 1:
            soft = [(1 - spec.human_weight) * p for p in teacher]
            soft[index[c.human]] += spec.human_weight
            return c.human, tuple(round(p, 6) for p in soft), "human+teacher"
        one_hot = [0.0] * len(index)
        one_hot[index[c.human]] = 1.0
        return c.human, tuple(one_hot), LabelSource.HUMAN
    if c.teacher not in index or teacher is None:
        return None
    return c.teacher, tuple(round(p, 6) for p in teacher), LabelSource.TEACHER


def _split(rows: list[Row], spec: DatasetSpec, train_only: set[str]) -> list[Row]:
    """Stratified: each label gives its share of ``round(n x validation_fraction)`` rows.

    Rows in ``train_only`` (synthetic cases) are never validation rows, nor counted in it.

    Shares are floor(n_label x fraction), and the rows left over go to the labels with the
    largest remainders (largest-remainder apportionment), so that small labels of a few-shot
    set still add up to a validation set of the asked size. Within a label, the rows with the
    lowest seeded hash go first.
    """
    by_label: dict[str, list[Row]] = defaultdict(list)
    always_train = [_with_split(row, Split.TRAIN) for row in rows if row.case_id in train_only]
    rows = [row for row in rows if row.case_id not in train_only]
    for row in rows:
        by_label[row.label].append(row)
    labels = sorted(by_label)
    quota = {label: len(by_label[label]) * spec.validation_fraction for label in labels}
    take = {label: math.floor(q) for label, q in quota.items()}
    wanted = round(len(rows) * spec.validation_fraction)
    if len(rows) >= 2:
        wanted = max(wanted, 1)  # early stopping needs something to watch
    by_remainder = sorted(
        (label for label in labels if take[label] < len(by_label[label]) - 1),
        key=lambda label: (-(quota[label] - take[label]), _unit(spec.seed + 3, label)),
    )
    for label in by_remainder[: max(0, wanted - sum(take.values()))]:
        take[label] += 1
    out: list[Row] = []
    for label in labels:
        members = sorted(by_label[label], key=lambda r: _unit(spec.seed + 1, r.case_id))
        for i, row in enumerate(members):
            out.append(_with_split(row, Split.VALIDATION if i < take[label] else Split.TRAIN))
    return out + always_train


def _with_split(row: Row, split: str) -> Row:
    return replace(row, split=split)


def _partition(
    candidates: list[Candidate], spec: DatasetSpec, dropped: Counter[str], history: History
) -> tuple[list[Row], list[tuple[Candidate, tuple[str, tuple[float, ...], str]]], set[str]]:
    """The fixed gold evaluation rows, the labeled training pool, and the eval texts' hashes.

    A production case that an earlier version trained on never becomes an evaluation row, even
    when it gets a human label later (a reviewed teacher label): a model in the lineage has
    seen it, so it would score that model on its own training data. A case an earlier version
    evaluated on stays in evaluation (the set is frozen; it only grows).
    """
    trained = history.trained
    eval_rows: list[Row] = []
    pool: list[tuple[Candidate, tuple[str, tuple[float, ...], str]]] = []
    eval_hashes: set[str] = set()
    for c in candidates:
        if c.capture_reason == CaptureReason.GOLD_EVAL and c.human is None:
            continue  # an evaluation row without its label (it was erased): unusable
        if c.capture_reason == CaptureReason.GOLD_EVAL or (
            c.human is not None
            and c.capture_reason not in TRAIN_ONLY
            and (_unit(spec.seed, c.case_id) < spec.eval_fraction or c.case_id in history.evaluated)
            and c.case_id not in trained
        ):
            assert c.human is not None
            if c.human not in spec.labels:
                dropped["unknown_label"] += 1
                continue
            if c.text_hash in eval_hashes:
                dropped["duplicate"] += 1
                continue
            eval_hashes.add(c.text_hash)
            eval_rows.append(Row.gold(c.case_id, c.text, c.human, spec.labels))
            continue
        if (
            c.human is None
            and c.teacher_confidence is not None
            and c.teacher_confidence < spec.min_teacher_confidence
        ):
            dropped["low_teacher_confidence"] += 1
            continue
        target = _target(c, spec)
        if target is None:
            dropped["unknown_label"] += 1
            continue
        pool.append((c, target))

    return eval_rows, pool, eval_hashes


def _keep_synthetic(
    pool: list[tuple[Candidate, tuple[str, tuple[float, ...], str]]],
    eval_hashes: set[str],
    dropped: Counter[str],
) -> list[tuple[Candidate, tuple[str, tuple[float, ...], str]]]:
    """Synthetic cases train only beside their source, and only where the teacher agrees.

    A paraphrase of an evaluation row would score the model on what it trained on, so a
    synthetic case whose source is not in the training pool (held out, its text in the
    evaluation set, erased, capped, not consented, unlabeled) goes; so does one whose label
    (the teacher's, or a person's) is not the label it was written for.
    """
    sources = {
        c.case_id for c, _ in pool if c.source_case_id is None and c.text_hash not in eval_hashes
    }
    kept = []
    for c, target in pool:
        if c.source_case_id is not None and c.source_case_id not in sources:
            dropped["synthetic_source_not_training"] += 1
        elif c.source_case_id is not None and target[0] != c.intended_label:
            dropped["synthetic_label_disputed"] += 1
        else:
            kept.append((c, target))
    return kept


def _dedup(
    pool: list[tuple[Candidate, tuple[str, tuple[float, ...], str]]],
    eval_hashes: set[str],
    previous: set[str],
    dropped: Counter[str],
    seed: int,
) -> tuple[list[Row], list[Row]]:
    """One training row per normalized text, split into new rows and the previous version's."""
    # Dedup: human-labeled rows first, then a stable order by case id hash.
    pool.sort(key=lambda item: (item[1][2] == LabelSource.TEACHER, _unit(seed, item[0].case_id)))
    seen: set[str] = set()
    new_rows: list[Row] = []
    old_rows: list[Row] = []
    for c, (label, soft, source) in pool:
        if c.text_hash in eval_hashes:
            dropped["in_eval_set"] += 1
            continue
        if c.text_hash in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(c.text_hash)
        private = c.capture_reason not in PUBLIC_REASONS
        row = Row(c.case_id, c.text, label, soft, source, Split.TRAIN, private=private)
        (old_rows if c.case_id in previous else new_rows).append(row)
    if not previous:
        return new_rows + old_rows, []
    return new_rows, old_rows


def assemble(warehouse: Warehouse, spec: DatasetSpec) -> tuple[list[Row], dict[str, Any]]:
    """The rows of a dataset for ``spec`` and the counts that explain them (nothing saved)."""
    if len(spec.labels) < 2:
        raise EmptyDatasetError("a dataset needs a label set with at least two labels")
    caps = ContributionCaps(
        per_user=spec.caps_per_user,
        per_tenant=spec.caps_per_tenant,
        window=timedelta(days=spec.caps_window_days),
    )
    total_cases = int(warehouse.query("SELECT count(*) FROM cases")[0][0])
    eligible = eligible_case_ids(warehouse, caps)
    candidates = _load(warehouse, eligible, spec.teacher_id)
    dropped: Counter[str] = Counter()
    dropped["no_consent_or_capped"] = total_cases - len(eligible)

    history = history_of(warehouse)
    eval_rows, pool, eval_hashes = _partition(candidates, spec, dropped, history)
    shortfall = top_up_eval(eval_rows, pool, eval_hashes, spec, history)
    pool = _keep_synthetic(pool, eval_hashes, dropped)
    synthetic = {c.case_id for c, _ in pool if c.source_case_id is not None}
    previous = _members(warehouse, spec.previous)
    new_rows, old_rows = _dedup(pool, eval_hashes, previous, dropped, spec.seed)
    n_replay = min(len(old_rows), round(spec.replay_fraction * len(new_rows)))
    old_rows.sort(key=lambda r: _unit(spec.seed + 2, r.case_id))
    replay = [replace(r, split=Split.TRAIN, replay=True) for r in old_rows[:n_replay]]
    dropped["not_replayed"] = len(old_rows) - n_replay
    rows = _split(new_rows + replay, spec, synthetic) + sorted(eval_rows, key=lambda r: r.case_id)
    if not any(r.split == "train" for r in rows):
        raise EmptyDatasetError(
            f"no training rows: {total_cases} cases in the warehouse, {len(eligible)} consented "
            f"within caps, {len(candidates)} of them labeled; relabel or import labeled data"
        )
    counts = {
        "by_split": dict(Counter(r.split for r in rows)),
        "by_source": dict(Counter(r.source for r in rows if r.split != "eval")),
        "replay": len(replay),
        "private_train": sum(1 for r in rows if r.split != "eval" and r.private),
        "new": len(new_rows),
        "synthetic": sum(1 for r in rows if r.case_id in synthetic),
        "dropped": {k: v for k, v in dropped.items() if v},
        "labels_in_train": len({r.label for r in rows if r.split == "train"}),
        "eval_hash": eval_set_hash(eval_rows),
        "eval_shortfall": shortfall,
    }
    return rows, counts
