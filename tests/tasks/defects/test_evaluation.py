"""Evaluation of the defects detector: mAP from torchmetrics, PR/confusion plot data, and the
evaluate stage's speed figures of its deployable (named by the task: throughput_ips)."""

from __future__ import annotations

import csv
import itertools
import math

import torch

from liveml.tasks.defects.evaluation import (
    confusion_pairs,
    detection_quality,
    evaluate,
    write_plots,
)

CLASSES = ["scratch", "crack", "spot"]


def target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def pred(boxes, labels, scores):
    d = target(boxes, labels)
    return d | {"scores": torch.tensor(scores, dtype=torch.float32)}


TARGETS = [
    target([[10, 10, 50, 50], [60, 60, 90, 90]], [1, 2]),
    target([[5, 5, 25, 40], [70, 10, 80, 20]], [1, 3]),
]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_perfect_predictions():
    preds = [pred(t["boxes"].tolist(), t["labels"].tolist(), [0.9] * 2) for t in TARGETS]
    m = detection_quality(preds, TARGETS, CLASSES)["metrics"]
    assert m["map_50"] == 1.0 and m["map"] == 1.0
    for c in CLASSES:
        assert math.isclose(m[f"ap/{c}"], 1.0) and math.isclose(m[f"ap_50/{c}"], 1.0)


def test_no_predictions():
    empty = pred(torch.zeros(0, 4).tolist(), [], [])
    q = detection_quality([empty, empty], TARGETS, CLASSES)
    assert q["metrics"]["map_50"] == 0.0 and q["metrics"]["map"] == 0.0
    assert q["metrics"]["ap_50/crack"] == 0.0


def test_class_without_test_boxes_has_no_ap():
    q = detection_quality([pred([[10, 10, 50, 50]], [1], [0.9])], TARGETS[:1], CLASSES)
    assert q["metrics"]["ap/spot"] is None and q["pr_curves"]["spot"] == []


def test_per_class_ap50_averages_to_map50():
    # Shifted boxes (IoU ~0.7): right at 0.5, wrong at stricter IoUs; one false alarm.
    preds = [
        pred([[14, 14, 54, 54], [60, 60, 90, 90], [0, 0, 9, 9]], [1, 2, 1], [0.9, 0.8, 0.95]),
        pred([[5, 5, 25, 40]], [1], [0.7]),
    ]
    m = detection_quality(preds, TARGETS, CLASSES)["metrics"]
    per_class = [m[f"ap_50/{c}"] for c in CLASSES]
    assert math.isclose(sum(per_class) / 3, m["map_50"], abs_tol=1e-6)
    assert m["map"] < m["map_50"] < 1.0


def test_pr_curve_files(tmp_path):
    preds = [
        pred([[10, 10, 50, 50], [0, 0, 9, 9], [60, 60, 90, 90]], [1, 1, 2], [0.9, 0.8, 0.3]),
        pred([[5, 5, 25, 40], [70, 10, 80, 20]], [1, 3], [0.5, 0.6]),
    ]
    q = detection_quality(preds, TARGETS, CLASSES)
    write_plots(tmp_path, q["pr_curves"], [])
    for c in CLASSES:
        r = rows(tmp_path / "pr" / f"{c}.csv")
        recall = [float(x["recall"]) for x in r]
        precision = [float(x["precision"]) for x in r]
        assert recall[0] == 0.0 and recall[-1] == 1.0 and recall == sorted(recall)
        # COCO interpolates precision: it never rises with recall.
        assert all(a >= b for a, b in itertools.pairwise(precision))
    scratch = [float(x["precision"]) for x in rows(tmp_path / "pr" / "scratch.csv")]
    assert scratch[0] == 1.0 and math.isclose(scratch[-1], 2 / 3, abs_tol=1e-6)


def test_confusion(tmp_path):
    preds = [
        # crack predicted as spot; a confident false alarm; a below-threshold box (ignored)
        pred(
            [[10, 10, 50, 50], [60, 60, 90, 90], [100, 100, 120, 120], [0, 0, 4, 4]],
            [1, 3, 2, 1],
            [0.9, 0.8, 0.7, 0.1],
        ),
        pred([[5, 5, 25, 40]], [1], [0.9]),  # the spot at [70, 10, 80, 20] is missed
    ]
    pairs = confusion_pairs(preds, TARGETS, CLASSES, score_thresh=0.2)
    write_plots(tmp_path, {}, pairs)
    got = sorted((r["actual"], r["predicted"]) for r in rows(tmp_path / "confusion.csv"))
    assert got == sorted(
        [
            ("scratch", "scratch"),
            ("crack", "spot"),
            ("background", "crack"),
            ("scratch", "scratch"),
            ("spot", "background"),
        ]
    )


def test_confusion_matches_each_box_once():
    # Two detections on one ground-truth box: the higher score matches, the other is a false
    # alarm (greedy by score).
    preds = [pred([[10, 10, 50, 50], [11, 11, 50, 50]], [2, 1], [0.5, 0.9])]
    pairs = confusion_pairs(preds, [target([[10, 10, 50, 50]], [1])], CLASSES, 0.2)
    assert sorted(pairs) == [("background", "crack"), ("scratch", "scratch")]


def test_evaluate_end_to_end(tiny_cfg, tiny_data, tmp_path):
    from liveml.release.speed import task_speed
    from liveml.tasks import get_task
    from liveml.tasks.defects.module import DefectsModule

    cfg = tiny_cfg()
    module = DefectsModule(cfg)  # freshly initialised: quality is irrelevant here
    quality_only = evaluate(cfg, module, tiny_data, tmp_path / "plots")
    assert not any(k.startswith(("latency", "throughput")) for k in quality_only)
    speed = task_speed(
        get_task("defects"),
        cfg,
        module,
        tiny_data,
        batch_sizes=(1, 2),
        latency_iters=3,
        min_time=0.01,
    )
    assert set(speed) == {
        "latency_p50_ms",
        "latency_p95_ms",
        "throughput_ips",
        "best_batch_size",
        "throughput_per_batch_size",
        "device",
        "num_threads",
    }
    out = {**quality_only, **speed}  # what the evaluate stage writes (before the scope)
    keys = {"map_50", "map", "mar_100", "latency_p50_ms", "latency_p95_ms", "throughput_ips"}
    keys |= {"best_batch_size", "n_test_images", "device", "num_threads"}
    keys |= {f"{k}/{c}" for k in ("ap", "ap_50") for c in CLASSES}
    assert keys <= set(out)
    assert set(out["throughput_per_batch_size"]) == {"1", "2"}
    assert out["n_test_images"] == cfg.data.n_test
    assert 0.0 <= out["map_50"] <= 1.0 and out["latency_p50_ms"] > 0
    assert out["best_batch_size"] in (1, 2) and out["throughput_ips"] > 0
    assert (tmp_path / "plots" / "confusion.csv").read_text().startswith("actual,predicted\n")
    assert {p.name for p in (tmp_path / "plots" / "pr").iterdir()} == {f"{c}.csv" for c in CLASSES}
