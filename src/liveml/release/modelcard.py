"""Model card: what a shipped model is, where it came from, how good it is, what it is not for.

The lineage is copied from the training run record, so a card traces a deployed file back to
the exact code, config and data that produced it. No torch here: the card is plain JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run-record keys the lineage cannot do without (see docs/architecture.md, "Run record").
REQUIRED_RECORD_KEYS = ("run_id", "fingerprint", "code", "config", "data", "environment")

LIMITATIONS = (
    "Trained from scratch on synthetic data (no pretrained weights). Quality on real inputs "
    "is unknown until measured on them; inputs outside the data recipe recorded in "
    "lineage.config.data (e.g. other capture conditions) may score worse than the metrics "
    "say. Speed was measured on the machine named in metrics.device and differs "
    "on other hardware."
)


def build_card(
    *,
    task: str,
    run_record: Mapping[str, Any],
    metrics: Mapping[str, Any],
    scope: Mapping[str, Any],
    exports: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    signature: Mapping[str, Any],
    intended_use: str | None = None,
    limitations: str = LIMITATIONS,
) -> dict:
    """Assemble the card (a JSON-ready dict) from a run record, metrics, scope and exports."""
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in run_record]
    if missing:
        raise ValueError(
            f"run record lacks {', '.join(missing)}; the model card needs them for lineage. "
            "Fix: retrain (`dvc repro train`) so run.json is written by this liveml version."
        )
    record = copy.deepcopy(dict(run_record))
    code = record["code"]
    model_cfg = record["config"].get("model", {}) if isinstance(record["config"], dict) else {}
    return {
        "name": f"liveml-{task}-{record['run_id']}",
        "task": task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": model_cfg.get("name"),
        "classes": list(classes),
        "signature": dict(signature),
        "lineage": {
            "run_id": record["run_id"],
            "fingerprint": record["fingerprint"],
            "code": {
                "commit": code.get("commit"),
                "dirty": code.get("dirty"),
                "diff_sha256": code.get("diff_sha256"),
            },
            "data": record["data"],
            "environment": record["environment"],
            "config": record["config"],
            "seed": record.get("seed"),
            "weights_sha256": record.get("weights_sha256"),
            "wandb": record.get("wandb"),
        },
        "metrics": dict(metrics),
        "scope": {
            "meets_scope": bool(scope["meets_scope"]),
            "targets": dict(scope.get("targets", {})),
        },
        "exports": [dict(e) for e in exports],
        "intended_use": intended_use
        or (
            f"{task}: predictions"
            + (f" of {', '.join(classes)}" if classes else "")
            + " for inputs like those described by the data recipe in lineage.config.data, "
            "as an aid whose answers a person reviews."
        ),
        "limitations": limitations,
    }


def write_card(card: Mapping[str, Any], path: str | Path) -> Path:
    """Write the card as JSON atomically (a reader never sees half a card)."""
    from liveml.core.atomic import atomic_write_json

    atomic_write_json(path, dict(card))
    return Path(path)
