"""Feedback data of the defects task through the framework's feedback code: ground truth by
hash, versions in the COCO layout, merge into generated data, the headline score."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest

from liveml.data import feedback
from liveml.data.feedback import in_holdout
from liveml.tasks import get_task

TASK = get_task("defects")
ground_truth = TASK.ground_truth


def write_version(*args, **kw) -> dict:
    return feedback.write_version(TASK, *args, **kw)


def merge(data_dir: Path, versions: list[Path]) -> dict:
    return feedback.merge(TASK, data_dir, versions)


def quality(cfg, module, data_dir: Path, split: str = "test") -> dict:
    return feedback.score(TASK, cfg, module, data_dir, split)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def coco(data_dir: Path, split: str) -> dict:
    return json.loads((data_dir / "annotations" / f"{split}.json").read_text())


def labels_of(c: dict) -> dict[str, list]:
    """file sha256 -> sorted (category, bbox) of its annotations: labels independent of ids."""
    by_id = {img["id"]: [] for img in c["images"]}
    for ann in c["annotations"]:
        by_id[ann["image_id"]].append((ann["category_id"], ann["bbox"]))
    return {img["_sha"]: sorted(by_id[img["id"]]) for img in c["images"]}


def labelled(data_dir: Path, split: str) -> dict[str, list]:
    c = coco(data_dir, split)
    for img in c["images"]:
        img["_sha"] = sha(data_dir / img["file_name"])
    return labels_of(c)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: spinning threads only slow it down
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory, make_defects_data) -> Path:
    """A drifted dataset (another seed, darker photos) standing in for the served traffic."""
    out = tmp_path_factory.mktemp("traffic") / "data"
    return make_defects_data(out, {"seed": 7, "brightness": 0.7})


def all_images(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("images/*/*.png"))


def test_ground_truth_finds_every_file_with_its_labels(traffic):
    truth = ground_truth([traffic])
    files = all_images(traffic)
    assert len(files) == 40 and set(truth) == {sha(f) for f in files}
    for split in ("train", "val", "test"):
        boxes = labelled(traffic, split)
        for img in coco(traffic, split)["images"]:
            digest = sha(traffic / img["file_name"])
            rec = truth[digest]
            assert rec["source"] == {"dir": str(traffic), "split": split, "file": img["file_name"]}
            assert rec["image"] == {k: v for k, v in img.items() if k not in ("id", "file_name")}
            assert (
                sorted((a["category_id"], a["bbox"]) for a in rec["annotations"]) == boxes[digest]
            )
            assert rec["categories"] == coco(traffic, split)["categories"]
    with pytest.raises(FileNotFoundError, match="generator"):
        ground_truth([traffic / "images"])


def test_write_version_labels_known_inputs_skips_unknown(traffic, tiny_defects_data, tmp_path):
    truth = ground_truth([traffic])
    known = all_images(traffic)
    unknown = all_images(tiny_defects_data)[:5]  # real photos the traffic never contained
    inputs = known + unknown + known[:3]  # a photo captured twice is one photo
    out = tmp_path / "v0001"
    counts = write_version(inputs, truth, out, holdout=0.3, provenance={"captures": 43})
    assert counts == {
        "train": counts["train"],
        "test": counts["test"],
        "unlabelled": 5,
        "duplicates": 3,
        "inputs": 48,
    }
    assert counts["train"] + counts["test"] == 40 and counts["test"] > 0
    assert json.loads((out / "provenance.json").read_text()) == {"captures": 43}
    got = {}
    for split in ("train", "test"):
        c = coco(out, split)
        assert c["categories"] == coco(traffic, "train")["categories"]
        assert len(c["images"]) == counts[split]
        for img in c["images"]:
            path = out / img["file_name"]
            assert img["file_name"].startswith(f"images/{split}/{split}_")
            assert sha(path) == img["sha256"]  # bytes copied unchanged
            assert (split == "test") == in_holdout(img["sha256"], 0.3)
            img["_sha"] = img["sha256"]
        got |= labels_of(c)
    expected = {}
    for split in ("train", "val", "test"):
        expected |= labelled(traffic, split)
    assert got == expected
    with pytest.raises(ValueError, match="ground_truth"):
        write_version(unknown, truth, tmp_path / "v0002")
    assert not (tmp_path / "v0002").exists()


def test_holdout_is_deterministic_stable_and_near_its_share(traffic, tmp_path):
    truth = ground_truth([traffic])
    files = all_images(traffic)
    write_version(files[:20], truth, tmp_path / "a")
    write_version(list(reversed(files[:20])), truth, tmp_path / "b")
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")  # any input order
    write_version(files, truth, tmp_path / "c")  # more inputs: earlier ones keep their split
    for split in ("train", "test"):
        before = {img["sha256"] for img in coco(tmp_path / "a", split)["images"]}
        after = {img["sha256"] for img in coco(tmp_path / "c", split)["images"]}
        assert before <= after
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    held = sum(in_holdout(d, 0.3) for d in digests)
    assert binomtest(held, len(digests), 0.3).pvalue > 0.01
    assert not any(in_holdout(d, 0.0) for d in digests)


@pytest.fixture
def base(tiny_data, tmp_path) -> Path:
    """A private copy of the tiny config's freshly generated data (what generate writes)."""
    return Path(shutil.copytree(tiny_data, tmp_path / "raw"))


def test_merge_appends_train_and_data_stays_valid(traffic, base, tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    truth = ground_truth([traffic, base])
    v1 = tmp_path / "feedback" / "v0001"
    v2 = tmp_path / "feedback" / "v0002"
    write_version(all_images(traffic)[:20], truth, v1, provenance={"window": 3})
    # v2 also holds copies of the data's own val/test photos: in train they would leak.
    leaks = sorted(base.glob("images/test/*.png"))
    counts2 = write_version(all_images(traffic)[20:] + leaks, truth, v2, holdout=0.0)
    before = coco(base, "train")
    result = merge(base, [v1, v2])

    after = coco(base, "train")
    n1, n2 = len(coco(v1, "train")["images"]), counts2["train"] - len(leaks)
    assert result["train"] == n1 + n2 and n2 > 0
    assert len(after["images"]) == len(before["images"]) + n1 + n2
    assert after["images"][: len(before["images"])] == before["images"]
    ids = [img["id"] for img in after["images"]]
    ann_ids = [ann["id"] for ann in after["annotations"]]
    assert len(set(ids)) == len(ids) and len(set(ann_ids)) == len(ann_ids)
    names = [img["file_name"] for img in after["images"][len(before["images"]) :]]
    assert names[0] == "images/train/fb-v0001-00000.png" and names[-1].startswith(
        "images/train/fb-v0002-"
    )
    assert after["categories"] == before["categories"]
    # Labels travel with the bytes: each appended photo has its version's boxes.
    for img in after["images"]:
        img["_sha"] = sha(base / img["file_name"])
    merged = labels_of(after)
    for v in (v1, v2):
        for digest, boxes in labelled(v, "train").items():
            if digest not in {sha(p) for p in leaks}:
                assert merged[digest] == boxes
    feedback = json.loads((base / "feedback.json").read_text())
    assert feedback == [
        {
            "version": "v0001",
            "train": n1,
            "skipped": {"duplicate": 0},
            "provenance": {"window": 3},
        },
        {
            "version": "v0002",
            "train": n2,
            "skipped": {"duplicate": 8},
            "provenance": None,
        },
    ]
    report = get_task("defects").validate(cfg, base)
    assert report["problems"] == []
    assert report["summary"]["images_train"] == len(before["images"]) + n1 + n2


def test_merge_of_no_versions_leaves_the_data_byte_identical(base):
    before = tree_hashes(base)
    assert merge(base, []) == {"train": 0, "versions": []}
    assert tree_hashes(base) == before and not (base / "feedback.json").exists()


def test_merge_refuses_other_categories_before_writing(traffic, base, tmp_path):
    version = tmp_path / "v0001"
    write_version(all_images(traffic), ground_truth([traffic]), version, holdout=0.0)
    c = coco(version, "train")
    c["categories"] = list(reversed(c["categories"]))
    (version / "annotations" / "train.json").write_text(json.dumps(c))
    before = tree_hashes(base)
    with pytest.raises(ValueError, match="categories"):
        merge(base, [version])
    with pytest.raises(ValueError, match="file names"):
        merge(base, [tmp_path / "bad name"])
    assert tree_hashes(base) == before


class Oracle(torch.nn.Module):
    """A 'detector' that answers each photo with its true boxes: what a perfect model scores."""

    def __init__(self, data_dir: Path, split: str) -> None:
        super().__init__()
        from liveml.tasks.defects.evaluation import load_split

        self.anchor = torch.nn.Parameter(torch.zeros(1))  # predict() reads the device from it
        images, targets = load_split(data_dir, split)
        self.answers = {img.numpy().tobytes(): t for img, t in zip(images, targets, strict=True)}

    def forward(self, images):
        out = []
        for img in images:
            t = self.answers[img.cpu().numpy().tobytes()]
            out.append(t | {"scores": torch.ones(len(t["labels"]))})
        return out


def test_quality_on_data_and_feedback_versions(traffic, base, tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    module = get_task("defects").module(cfg).eval()
    version = tmp_path / "v0001"
    counts = write_version(all_images(traffic), ground_truth([traffic]), version, holdout=0.3)
    for data_dir, n in ((base, 8), (version, counts["test"])):
        q = quality(cfg, module, data_dir)
        assert q["metric"] == "map_50" and q["higher_is_better"] is True and q["n"] == n
        assert 0.0 <= q["value"] < 0.5  # an untrained detector finds next to nothing
        perfect = quality(cfg, Oracle(data_dir, "test"), data_dir)
        assert perfect["value"] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="split"):
        quality(cfg, module, version, "val")


def test_layout_round_trip_is_byte_identical(base):
    """Rewriting every split as read changes no byte: a merge touches only what it appends."""
    before = tree_hashes(base)
    for split in ("train", "val", "test"):
        examples = TASK.read_split(base, split)
        assert [e.stem for e in examples] == [f"{split}_{i:05d}" for i in range(len(examples))]
        TASK.write_split(base, split, examples)
    assert tree_hashes(base) == before


def test_merge_skips_photos_of_another_size(base, make_defects_data, tmp_path):
    other = make_defects_data(tmp_path / "other", {"seed": 9, "image_size": 48})
    version = tmp_path / "v0001"
    counts = write_version(all_images(other), ground_truth([other]), version, holdout=0.0)
    before = coco(base, "train")
    result = merge(base, [version])
    assert result["train"] == 0
    assert result["versions"][0]["skipped"] == {"duplicate": 0, "size": counts["train"]}
    assert coco(base, "train")["images"] == before["images"]
