"""Scope check: metrics against the task's min/max targets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from liveml.release.scope import check_scope

TARGETS = {"map_50": {"min": 0.85, "max": None}, "latency_p95_ms": {"min": None, "max": 50.0}}


def test_all_met():
    out = check_scope({"map_50": 0.9, "latency_p95_ms": 20.0, "extra": 1}, TARGETS)
    assert out["meets_scope"] is True
    assert out["targets"]["map_50"] == {"value": 0.9, "min": 0.85, "max": None, "met": True}
    assert out["targets"]["latency_p95_ms"]["met"] is True
    assert set(out["targets"]) == set(TARGETS)  # untargeted metrics are not judged


@pytest.mark.parametrize(
    ("metrics", "unmet"),
    [
        ({"map_50": 0.5, "latency_p95_ms": 20.0}, "map_50"),  # below a min
        ({"map_50": 0.9, "latency_p95_ms": 80.0}, "latency_p95_ms"),  # above a max
        ({"map_50": None, "latency_p95_ms": 20.0}, "map_50"),  # no value never meets
        ({"map_50": float("nan"), "latency_p95_ms": 20.0}, "map_50"),
    ],
)
def test_unmet(metrics, unmet):
    out = check_scope(metrics, TARGETS)
    assert out["meets_scope"] is False
    assert [k for k, r in out["targets"].items() if not r["met"]] == [unmet]


def test_bounds_are_inclusive_and_both_sides_checked():
    targets = {"x": {"min": 1.0, "max": 2.0}}
    assert check_scope({"x": 1.0}, targets)["meets_scope"]
    assert check_scope({"x": 2.0}, targets)["meets_scope"]
    assert not check_scope({"x": 2.5}, targets)["meets_scope"]


def test_missing_metric_names_it_and_the_fix():
    with pytest.raises(ValueError) as e:
        check_scope({"map_50": 0.9, "map": 0.5}, {"map_5O": {"min": 0.8}}, task="defects")
    msg = str(e.value)
    assert "map_5O" in msg and "map, map_50" in msg and "conf/task/defects.yaml" in msg


def test_target_without_bound_is_an_error():
    with pytest.raises(ValueError, match="neither `min` nor `max`"):
        check_scope({"x": 1.0}, {"x": {"min": None, "max": None}})


def test_accepts_the_checked_config_targets():
    """The evaluate stage passes `cfg.task.targets` (OmegaConf nodes of `Target`)."""
    from omegaconf import OmegaConf

    from liveml.core.config import Target, TaskConfig

    cfg = OmegaConf.merge(
        OmegaConf.structured(TaskConfig),
        {"targets": {"map_50": {"min": 0.85}, "latency_p95_ms": {"max": 50.0}}},
    )
    out = check_scope({"map_50": 0.9, "latency_p95_ms": 60.0}, cfg.targets)
    assert out["targets"]["latency_p95_ms"] == {
        "value": 60.0,
        "min": None,
        "max": 50.0,
        "met": False,
    }
    assert check_scope({"x": 3.0}, {"x": Target(min=2.0)})["meets_scope"]


def test_does_not_import_torch():
    code = (
        "import sys, liveml.release.scope, liveml.release.modelcard; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
