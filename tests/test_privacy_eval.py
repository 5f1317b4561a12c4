"""The evaluation corpus, the metrics, and the targets of the full scrubber on the corpus."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tutorloop.privacy import heldout_corpus, seen_corpus
from tutorloop.privacy.eval_corpus import TEMPLATES, generate
from tutorloop.privacy.evaluation import STRUCTURED, evaluate


def test_corpus_is_deterministic_and_its_spans_point_at_values() -> None:
    first, again = generate(300, seed=3), generate(300, seed=3)
    assert first == again
    assert generate(300, seed=4) != first
    templates_seen = set()
    for rec in first:
        for span in rec["spans"]:
            value = rec["full_text"][span["start_position"] : span["end_position"]]
            assert value.strip() == value and value
        templates_seen.add(rec["full_text"][:12])
    assert len(templates_seen) > len(TEMPLATES) // 2
    names = [
        rec["full_text"][s["start_position"] : s["end_position"]]
        for rec in first
        for s in rec["spans"]
        if s["entity_type"] == "PERSON"
    ]
    assert any(n.islower() for n in names) and any(n.isupper() for n in names)


def test_the_held_out_corpus_is_deterministic_and_disjoint_from_the_development_one() -> None:
    first = heldout_corpus.generate(300, seed=0)
    assert first == heldout_corpus.generate(300, seed=0)
    for rec in first:
        for span in rec["spans"]:
            value = rec["full_text"][span["start_position"] : span["end_position"]]
            assert value.strip() == value and value
    # Its own templates and locales: nothing shared with the splits the rules were tuned on.
    from tutorloop.privacy.eval_corpus import LOCALES

    for development in ((TEMPLATES, LOCALES), (seen_corpus.TEMPLATES, seen_corpus.LOCALES)):
        assert not set(heldout_corpus.TEMPLATES) & set(development[0])
        assert not set(heldout_corpus.LOCALES) & set(development[1])


def test_cli_writes_the_held_out_split_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    out = tmp_path / "h.json"
    ok = run_cli("privacy", "corpus", "--out", str(out), "--n", "20", "--split", "held-out")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text()) == heldout_corpus.generate(20, 0)
    seen = run_cli("privacy", "corpus", "--out", str(out), "--n", "5", "--split", "seen")
    assert seen.returncode == 0 and json.loads(out.read_text()) == seen_corpus.generate(5, 0)
    bad = run_cli("privacy", "corpus", "--out", str(out), "--split", "test")
    assert bad.returncode == 2 and "unknown split" in bad.stderr


def test_corpus_does_not_depend_on_the_hash_seed() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, json; from tutorloop.privacy import eval_corpus, heldout_corpus, "
        "seen_corpus; print(hashlib.sha256(json.dumps([eval_corpus.generate(200, 0), "
        "seen_corpus.generate(200, 0), heldout_corpus.generate(200, 0)]).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_metrics_are_character_level() -> None:
    records = [
        {
            "full_text": "call ab12 now",
            "spans": [{"entity_type": "X", "start_position": 5, "end_position": 9}],
        }
    ]

    def half(texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        return [[(7, 11, "Y")] for _ in texts]  # covers "12" of the gold and " n" outside

    report = evaluate("half", records, half)
    assert report.char_recall == pytest.approx(0.5)
    assert report.char_precision == pytest.approx(0.5)
    assert report.per_type_recall == {"X": pytest.approx(0.5)}


def test_cli_corpus_and_eval_with_the_regex_scrubber(tmp_path: Path) -> None:
    corpus = tmp_path / "c.json"
    assert run_cli("privacy", "corpus", "--out", str(corpus), "--n", "150").returncode == 0
    result = run_cli(
        "privacy", "eval", str(corpus), "--scrubber", "regex", "--no-baseline", "--json"
    )
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    for entity in ("EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "IP_ADDRESS"):
        if entity in report["per_type_recall"]:
            assert report["per_type_recall"][entity] == 1.0, entity


def test_cli_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '[{"full_text": "x", "spans": [{"entity_type": "A", "start_position": 0, '
        '"end_position": 9}]}]'
    )
    result = run_cli("privacy", "eval", str(bad), "--no-baseline")
    assert result.returncode == 2
    assert "bad span" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_full_scrubber_meets_its_targets_on_the_corpus() -> None:
    from tutorloop.privacy.presidio_scrubber import PresidioScrubber

    records = generate(1000, seed=0)  # the corpus BENCHMARKS.md reports on
    report = evaluate("presidio", records, PresidioScrubber().spans_batch)
    for entity in STRUCTURED:
        assert report.per_type_recall.get(entity, 1.0) >= 0.99, (entity, report)
    assert report.char_recall >= 0.90, report
    assert report.char_precision >= 0.80, report


@pytest.mark.slow
def test_full_scrubber_on_the_first_held_out_split_keeps_its_measured_level() -> None:
    # Not a target (BENCHMARKS.md has those, and the misses): a floor under what was measured,
    # so that a change that loses ground on text the rules were not written for shows up.
    from tutorloop.privacy.presidio_scrubber import PresidioScrubber

    report = evaluate("presidio", seen_corpus.generate(1000, 0), PresidioScrubber().spans_batch)
    for entity in STRUCTURED:
        assert report.per_type_recall.get(entity, 1.0) >= 0.99, (entity, report)
    assert report.char_recall >= 0.96 and report.char_precision >= 0.96, report


@pytest.mark.slow
def test_full_scrubber_on_the_held_out_split_meets_the_targets() -> None:
    # The targets (#13), on the split no rule was written against; measured 0.954 at
    # 0.935 (BENCHMARKS.md).
    from tutorloop.privacy.presidio_scrubber import PresidioScrubber

    scrubber = PresidioScrubber()
    report = evaluate("presidio", heldout_corpus.generate(1000, 0), scrubber.spans_batch)
    for entity in STRUCTURED:
        assert report.per_type_recall.get(entity, 1.0) >= 0.99, (entity, report)
    assert report.char_recall >= 0.92 and report.char_precision >= 0.85, report
