"""Feedback data of the speech task through the framework's feedback code: ground truth by
hash, versions in the manifest layout, held-out voices, merge, the headline score."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest

from liveml.data import feedback
from liveml.data.feedback import in_holdout, merged_train
from liveml.tasks import get_task
from liveml.tasks.speech.feedback import quality_metrics

TASK = get_task("speech")
ground_truth = TASK.ground_truth


def write_version(*args, **kw) -> dict:
    return feedback.write_version(TASK, *args, **kw)


def merge(data_dir: Path, versions: list[Path]) -> dict:
    return feedback.merge(TASK, data_dir, versions)


def quality(cfg, module, data_dir: Path, split: str = "test") -> dict:
    """The framework's score, plus the task's word error rate on the same split."""
    score = feedback.score(TASK, cfg, module, data_dir, split)
    return {**score, "wer": quality_metrics(cfg, module, data_dir, split)["wer"]}


SPLITS = ("train", "val", "test")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def rows(data_dir: Path, split: str) -> list[dict]:
    text = (data_dir / "manifests" / f"{split}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def clips(data_dir: Path, split: str) -> list[Path]:
    return [data_dir / r["file"] for r in rows(data_dir, split)]


def variant(voice: str) -> str:
    return voice.partition("+")[2]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: spinning threads only slow it down
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory, make_speech_data) -> Path:
    """A drifted dataset (another seed, noisier rooms) standing in for the served traffic."""
    out = tmp_path_factory.mktemp("traffic") / "data"
    return make_speech_data(out, {"seed": 7, "conditions.snr_db": [8, 20]})


@pytest.fixture
def base(tiny_speech_data_dir, tmp_path) -> Path:
    """A private copy of the tiny config's freshly generated data (what generate writes)."""
    return Path(shutil.copytree(tiny_speech_data_dir, tmp_path / "raw"))


def test_ground_truth_finds_every_clip_with_its_row(traffic):
    truth = ground_truth([traffic])
    recipe = json.loads((traffic / "recipe.json").read_text())
    held_out = set(recipe["voices"]["val"]) | set(recipe["voices"]["test"])
    assert len(truth) == 40
    for split in SPLITS:
        for row in rows(traffic, split):
            rec = truth[sha(traffic / row["file"])]
            assert {k: v for k, v in rec.items() if k != "source"} == {
                k: v for k, v in row.items() if k != "file"
            }
            assert rec["source"] == {
                "dir": str(traffic),
                "split": split,
                "file": row["file"],
                "held_out_voice": variant(row["voice"]) in held_out,
            }
            assert rec["source"]["held_out_voice"] == (split != "train")
    with pytest.raises(FileNotFoundError, match="generator"):
        ground_truth([traffic / "audio"])


def test_write_version_labels_known_clips_keeps_held_out_voices_out_of_train(
    traffic, tiny_speech_data_dir, tmp_path
):
    truth = ground_truth([traffic])
    known = [p for split in SPLITS for p in clips(traffic, split)]
    unknown = clips(tiny_speech_data_dir, "train")[:4]  # real clips the traffic never held
    out = tmp_path / "v0001"
    counts = write_version(known + unknown + known[:2], truth, out, provenance={"window": 1})
    assert counts == {
        "train": counts["train"],
        "test": counts["test"],
        "unlabelled": 4,
        "duplicates": 2,
        "held_out_voice": 16,  # the traffic's 8 val + 8 test clips
        "inputs": 46,
    }
    assert counts["train"] + counts["test"] == 40 and counts["train"] > 0
    assert json.loads((out / "provenance.json").read_text()) == {"window": 1}
    written = {}
    for split in ("train", "test"):
        got = rows(out, split)
        assert len(got) == counts[split]
        for row in got:
            assert row["file"].startswith(f"audio/{split}/{split}_")
            assert sha(out / row["file"]) == row["sha256"]  # bytes copied unchanged
            held = row["source"]["held_out_voice"]
            assert (split == "test") == (held or in_holdout(row["sha256"], 0.3))
            written[row["sha256"]] = row
    for digest, rec in truth.items():  # every label arrives unchanged
        assert {k: v for k, v in written[digest].items() if k not in ("file", "sha256")} == {
            k: v for k, v in rec.items() if k != "file"
        }
    with pytest.raises(ValueError, match="ground_truth"):
        write_version(unknown, truth, tmp_path / "v0002")
    assert not (tmp_path / "v0002").exists()


def test_holdout_is_deterministic_stable_and_near_its_share(traffic, tmp_path):
    truth = ground_truth([traffic])
    files = clips(traffic, "train")
    write_version(files[:12], truth, tmp_path / "a")
    write_version(list(reversed(files[:12])), truth, tmp_path / "b")
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")  # any input order
    write_version(files, truth, tmp_path / "c")  # more inputs: earlier ones keep their split
    for split in ("train", "test"):
        before = {r["sha256"] for r in rows(tmp_path / "a", split)}
        assert before <= {r["sha256"] for r in rows(tmp_path / "c", split)}
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    held = sum(in_holdout(d, 0.3) for d in digests)
    assert binomtest(held, len(digests), 0.3).pvalue > 0.01
    assert all(in_holdout(d, 1.0) for d in digests)


def test_merge_appends_train_and_data_stays_valid(traffic, base, tiny_speech_cfg, tmp_path):
    cfg = tiny_speech_cfg()
    v1 = tmp_path / "feedback" / "v0001"
    v2 = tmp_path / "feedback" / "v0002"
    write_version(
        [p for split in SPLITS for p in clips(traffic, split)],
        ground_truth([traffic]),
        v1,
        provenance={"window": 3},
    )
    # v2 is labelled from a copy without recipe.json, so write_version cannot know the held-out
    # voices and puts val clips into train; and it repeats the data's own train clips.
    blind = Path(shutil.copytree(traffic, tmp_path / "blind"))
    (blind / "recipe.json").unlink()
    write_version(
        clips(blind, "val") + clips(base, "train"),
        ground_truth([blind, base]),
        v2,
        holdout=0.0,
    )
    before = rows(base, "train")
    result = merge(base, [v1, v2])

    after = rows(base, "train")
    n1 = len(rows(v1, "train"))
    assert result["train"] == n1 > 0 and merged_train(base) == n1
    assert after[: len(before)] == before
    added = after[len(before) :]
    assert [r["file"] for r in added] == [f"audio/train/fb-v0001-{i:05d}.wav" for i in range(n1)]
    for row, source in zip(added, rows(v1, "train"), strict=True):
        assert sha(base / row["file"]) == source["sha256"]
        assert {k: v for k, v in row.items() if k not in ("file", "feedback")} == {
            k: v for k, v in source.items() if k != "file"
        }
    assert json.loads((base / "feedback.json").read_text()) == [
        {
            "version": "v0001",
            "train": n1,
            "skipped": {"duplicate": 0},
            "provenance": {"window": 3},
        },
        {
            "version": "v0002",
            "train": 0,
            "skipped": {"duplicate": 16, "held_out_voice": 8},
            "provenance": None,
        },
    ]
    report = get_task("speech").validate(cfg, base)
    # The recipe's n_train counts generated clips only; until speech checks add
    # feedback.merged_train(data_dir), that count is the one problem allowed, and only for
    # exactly the appended clips. Held-out voices, labels, files and formats must all pass.
    count = [
        str(base / "manifests/train.jsonl"),
        f"lists {16 + n1} clips, the recipe asks n_train=16",
    ]
    assert [p for p in report["problems"] if p != count] == []
    assert report["summary"]["clips_train"] == 16 + n1


def test_merge_of_no_versions_leaves_the_data_byte_identical(base):
    before = tree_hashes(base)
    assert merge(base, []) == {"train": 0, "versions": []}
    assert tree_hashes(base) == before and merged_train(base) == 0


def test_merge_refuses_bad_versions_before_writing(traffic, base, tmp_path):
    version = tmp_path / "v0001"
    write_version(clips(traffic, "train"), ground_truth([traffic]), version, holdout=0.0)
    twin = Path(shutil.copytree(version, tmp_path / "other" / "v0001"))
    before = tree_hashes(base)
    with pytest.raises(ValueError, match="collide"):
        merge(base, [version, twin])
    with pytest.raises(FileNotFoundError, match="write_version"):
        merge(base, [version, tmp_path / "v0002"])
    assert tree_hashes(base) == before


class Oracle:
    """A 'recognizer' that answers each clip with its transcript: what a perfect model scores."""

    def __init__(self, data_dir: Path, split: str) -> None:
        from liveml.tasks.speech.evaluation import load_split

        waves, manifest = load_split(data_dir, split)
        self.answers = {
            w.numpy().tobytes(): r["text"] for w, r in zip(waves, manifest, strict=True)
        }

    def transcribe(self, waves, batch_size: int = 32) -> list[str]:
        return [self.answers[w.numpy().tobytes()] for w in waves]


def test_quality_on_data_and_feedback_versions(traffic, base, tiny_speech_cfg, tmp_path):
    cfg = tiny_speech_cfg()
    module = get_task("speech").module(cfg).eval()
    version = tmp_path / "v0001"
    counts = write_version(clips(traffic, "train"), ground_truth([traffic]), version)
    for data_dir, n in ((base, 8), (version, counts["test"])):
        q = quality(cfg, module, data_dir)
        assert q["metric"] == "cer" and q["higher_is_better"] is False and q["n"] == n
        assert q["value"] >= 0.5 and q["wer"] >= 0.5  # an untrained recognizer hears nothing
        perfect = quality(cfg, Oracle(data_dir, "test"), data_dir)
        assert perfect["value"] == 0.0 and perfect["wer"] == 0.0
    with pytest.raises(FileNotFoundError, match="split"):
        quality(cfg, module, version, "val")


def test_layout_round_trip_is_byte_identical(base):
    """Rewriting every split as read changes no byte: a merge touches only what it appends."""
    before = tree_hashes(base)
    for split in SPLITS:
        examples = TASK.read_split(base, split)
        assert [e.stem for e in examples] == [f"{split}_{i:05d}" for i in range(len(examples))]
        TASK.write_split(base, split, examples)
    assert tree_hashes(base) == before


def test_merge_skips_clips_in_another_format(traffic, base, tmp_path):
    import soundfile as sf

    version = tmp_path / "v0001"
    counts = write_version(clips(traffic, "train"), ground_truth([traffic]), version, holdout=0.0)
    for row in rows(version, "train"):  # the same speech, stored as 32-bit float samples
        samples, rate = sf.read(version / row["file"], dtype="float32")
        sf.write(version / row["file"], samples, rate, subtype="FLOAT")
    before = rows(base, "train")
    result = merge(base, [version])
    assert result["train"] == 0
    assert result["versions"][0]["skipped"] == {"duplicate": 0, "format": counts["train"]}
    assert rows(base, "train") == before
