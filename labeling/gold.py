"""Import labeled examples (a gold seed set, reviewed data) into the warehouse as cases.

Imported rows go through the same scrubber as production traffic and become ``cases`` with a
``human`` label each, so lineage answers "which data" for the seed student exactly as for
captured traffic. Case ids are derived from the source name, row number and text: importing
the same file twice adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from tutorloop.infra.hashing import case_text_hash, fingerprint
from tutorloop.infra.tables import CaptureReason, LabelSource
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.case_store import insert_cases, insert_labels
from tutorloop.labeling.labeled_csv import LabeledRows
from tutorloop.privacy.scrubber import Scrubber

# Imported as the fixed evaluation set: always evaluation, never trained on.


@dataclass(frozen=True)
class ImportReport:
    source: str
    rows: int
    cases_added: int
    labels_added: int
    case_ids: list[str]


def gold_case_id(source: str, row: int, text: str) -> str:
    return "gold-" + fingerprint(source, str(row), text, length=24)


def import_gold(
    warehouse: Warehouse,
    rows: LabeledRows,
    scrubber: Scrubber,
    *,
    source: str,
    actor: str,
    tenant_id: str = "import",
    for_eval: bool = False,
    private: bool = False,
) -> ImportReport:
    """Scrub and store ``rows`` as consented cases with human labels from ``actor``.

    With ``for_eval`` the rows become the fixed gold evaluation set instead of training data.
    Imported training rows are public for DP-SGD unless ``private`` (rows derived from users,
    e.g. an export of reviewed production cases): then DP spends epsilon on them.
    Each row gets its own pseudonymous user (``import:<source>:<row>``): contribution caps
    limit what one production user adds, and a curated set is not one user's traffic.
    """
    scrubbed = scrubber.scrub_batch(rows.texts)
    ts = datetime.now(UTC)
    reason = (
        CaptureReason.GOLD_EVAL if for_eval
        else CaptureReason.PRIVATE_IMPORT if private else CaptureReason.GOLD_IMPORT
    )  # fmt: skip
    cases = []
    labels = []
    ids = []
    for i, (result, label) in enumerate(zip(scrubbed, rows.labels, strict=True)):
        case_id = gold_case_id(source + (":eval" if for_eval else ""), i, rows.texts[i])
        ids.append(case_id)
        cases.append(
            {
                "case_id": case_id, "request_id": case_id, "prediction_event_id": None, "ts": ts,
                "tenant_id": tenant_id, "user_id": f"import:{source}:{i}", "model_version": None,
                "text": result.text, "text_hash": case_text_hash(result.text),
                "predicted_label": None, "confidence": None, "capture_reason": reason,
                "consent_training": True,
                "scrub_findings": json.dumps(result.findings, sort_keys=True),
                "scrub_policy_version": result.policy_version,
            }
        )  # fmt: skip
        labels.append(
            {
                "label_id": f"human-{case_id}", "case_id": case_id, "source": LabelSource.HUMAN,
                "label": label, "confidence": 1.0, "actor": actor,
            }
        )  # fmt: skip
    with warehouse.transaction() as con:
        added = insert_cases(con, cases, typed=False)
        labeled = insert_labels(con, labels)
    return ImportReport(source, len(rows), added, labeled, ids)
