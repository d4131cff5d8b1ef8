"""Model card: required fields, lineage copied from the run record, atomic JSON."""

from __future__ import annotations

import json

import pytest

from liveml.release.modelcard import build_card, write_card

RECORD = {
    "run_id": "20250101-000000-abcd",
    "task": "defects",
    "fingerprint": "f" * 64,
    "code": {"commit": "c" * 40, "dirty": True, "diff_sha256": "d" * 64},
    "config": {"seed": 0, "model": {"name": "fcos_tiny"}, "data": {"image_size": 160}},
    "data": {"data/defects/raw": "0123abcd.dir"},
    "environment": {"python": "3.11", "torch": "2.11.0", "lock_sha256": "e" * 64},
    "seed": 0,
    "weights_sha256": "w" * 64,
}
SIGNATURE = {"inputs": [{"name": "images", "shape": [1, 3, 160, 160]}], "outputs": []}
SCOPE = {"meets_scope": False, "targets": {"map_50": {"value": 0.5, "min": 0.85, "met": False}}}
EXPORTS = [{"format": "torchscript", "file": "model.ts", "sha256": "a" * 64}]


def card(**kw):
    args = {
        "task": "defects",
        "run_record": RECORD,
        "metrics": {"map_50": 0.5},
        "scope": SCOPE,
        "exports": EXPORTS,
        "classes": ["scratch", "crack", "spot"],
        "signature": SIGNATURE,
    }
    return build_card(**(args | kw))


def test_fields_and_lineage():
    c = card()
    for key in ("name", "task", "created", "lineage", "signature", "metrics", "scope"):
        assert key in c
    assert c["name"] == "liveml-defects-20250101-000000-abcd"
    assert c["architecture"] == "fcos_tiny"
    lin = c["lineage"]
    assert lin["run_id"] == RECORD["run_id"] and lin["fingerprint"] == RECORD["fingerprint"]
    assert lin["code"] == RECORD["code"]
    assert lin["data"] == RECORD["data"] and lin["environment"] == RECORD["environment"]
    assert lin["config"] == RECORD["config"] and lin["weights_sha256"] == RECORD["weights_sha256"]
    assert c["scope"]["meets_scope"] is False and "map_50" in c["scope"]["targets"]
    assert c["exports"][0]["sha256"] == "a" * 64
    assert "synthetic data" in c["limitations"] and "no pretrained weights" in c["limitations"]
    assert "scratch" in c["intended_use"]


def test_card_is_a_snapshot_of_the_record():
    record = json.loads(json.dumps(RECORD))
    c = card(run_record=record)
    record["config"]["seed"] = 99
    assert c["lineage"]["config"]["seed"] == 0


def test_missing_lineage_is_an_error():
    record = {k: v for k, v in RECORD.items() if k != "fingerprint"}
    with pytest.raises(ValueError, match="fingerprint"):
        card(run_record=record)


def test_write_card(tmp_path):
    path = write_card(card(), tmp_path / "export" / "model_card.json")
    assert json.loads(path.read_text())["lineage"]["code"]["commit"] == "c" * 40
    assert [p.name for p in path.parent.iterdir()] == ["model_card.json"]  # no temp left
