from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.streams_events import prediction
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.caps import CaseRef, ContributionCaps, apply_caps, eligible_case_ids
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.streams.batch import RawRecord
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink import CaptureSink

T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def _case(user: str, tenant: str = "acme", day: int = 0, consent: bool = True) -> CaseRef:
    return CaseRef(str(uuid.uuid4()), user, tenant, T0 + timedelta(days=day, hours=1), consent)


def test_at_most_k_per_user_per_window() -> None:
    cases = [_case("heavy") for _ in range(40)] + [_case("light") for _ in range(3)]
    cases += [_case("heavy", day=7) for _ in range(10)]  # the next window
    kept = apply_caps(cases, ContributionCaps(per_user=5, window=timedelta(days=7)))
    per_user_window = Counter((c.user_id, c.ts >= T0 + timedelta(days=7)) for c in kept)
    assert per_user_window == {("heavy", False): 5, ("light", False): 3, ("heavy", True): 5}


def test_choice_is_deterministic_and_stable_under_unrelated_additions() -> None:
    caps = ContributionCaps(per_user=4)
    heavy = [_case("heavy") for _ in range(30)]
    first = {c.case_id for c in apply_caps(heavy, caps)}
    shuffled = heavy[:]
    random.Random(7).shuffle(shuffled)
    assert {c.case_id for c in apply_caps(shuffled, caps)} == first
    others = [_case(f"u{i}") for i in range(50)]
    with_others = apply_caps(heavy + others, caps)
    assert {c.case_id for c in with_others if c.user_id == "heavy"} == first


def test_tenant_cap_and_consent() -> None:
    cases = [_case(f"u{i}", tenant="big") for i in range(20)]
    cases += [_case("x", tenant="small", consent=False)]
    kept = apply_caps(cases, ContributionCaps(per_user=10, per_tenant=6))
    assert Counter(c.tenant_id for c in kept) == {"big": 6}


def test_invalid_caps_are_rejected() -> None:
    with pytest.raises(ValueError, match="per_user"):
        ContributionCaps(per_user=0)


def test_eligible_case_ids_from_the_warehouse(warehouse: Warehouse) -> None:
    sink = CaptureSink(
        warehouse,
        CapturePolicy.from_settings(CaptureSettings()),
        RegexScrubber(),
        predictions_topic="p",
        escalations_topic="e",
    )
    events = [prediction(confidence=0.1, user_id="heavy") for _ in range(12)]
    events += [prediction(confidence=0.1, user_id="light")]
    sink.write_predictions([RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)])
    ids = eligible_case_ids(warehouse, ContributionCaps(per_user=3))
    assert len(ids) == 4
    assert ids == eligible_case_ids(warehouse, ContributionCaps(per_user=3))


def test_caps_from_settings() -> None:
    from tutorloop.infra.settings_sections import PrivacySettings

    caps = ContributionCaps.from_settings(
        PrivacySettings(max_cases_per_user=3, max_cases_per_tenant=9, cap_window_days=1)
    )
    assert caps == ContributionCaps(per_user=3, per_tenant=9, window=timedelta(days=1))
