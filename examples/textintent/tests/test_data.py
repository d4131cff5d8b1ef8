"""Data: registration and config, deterministic generation, validation catching each kind of
bad data, and the on-disk layout round trip."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from liveml.core.errors import ConfigError
from liveml.tasks.base import Example, Task
from omegaconf import MISSING

from textintent.config import NgramBagConfig, TextIntentDataConfig
from textintent.task import TextIntentTask

from conftest import make_cfg, make_project

SPLITS = ("train", "val", "test")


def digest(folder: Path) -> str:
    """sha256 over every file's path and bytes: equal digests, equal datasets."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_registered_with_every_part(task):
    assert isinstance(task, TextIntentTask)
    for method in (
        "input_features",
        "model_view",
        "draw_input",
        "drifted_recipe",
        "ground_truth",
        "quality",
        "plots",
        "sample_rng",
    ):
        assert getattr(type(task), method) is not getattr(Task, method), method
    assert task.headline.metric == "accuracy" and task.headline.higher_is_better


def test_schemas_hold_no_values_and_yaml_sets_every_key(cfg):
    for schema, group in ((NgramBagConfig, "model"), (TextIntentDataConfig, "data")):
        fields = schema.__dataclass_fields__
        assert all(f.default is MISSING for f in fields.values()), schema
        assert set(cfg[group]) == set(fields)
    assert list(cfg.task.classes) == ["billing", "delivery", "returns", "account", "technical"]


def test_a_key_missing_from_yaml_is_named(tmp_path):
    project = make_project(tmp_path)
    model = project / "conf" / "model" / "textintent.yaml"
    model.write_text(model.read_text().replace("embed_dim: 32\n", ""))
    with pytest.raises(ConfigError, match=r"model\.embed_dim"):
        make_cfg(project)


def test_generate_is_deterministic_and_balanced(task, cfg, data_dir, tmp_path):
    summary = task.generate(cfg, tmp_path / "again")
    assert digest(tmp_path / "again") == digest(data_dir)
    assert summary["splits"]["train"] == {c: 40 for c in cfg.task.classes}


def _project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def test_another_seed_gives_other_messages(task, data_dir, tmp_path):
    cfg = make_cfg(_project(tmp_path), "data.seed=1")
    task.generate(cfg, tmp_path / "seed1")
    first = {e.input.read_bytes() for e in task.read_split(data_dir, "train")}
    other = {e.input.read_bytes() for e in task.read_split(tmp_path / "seed1", "train")}
    assert len(first & other) < 5


def test_generated_data_is_valid(task, cfg, data_dir):
    report = task.validate(cfg, data_dir)
    assert report["ok"] and report["problems"] == []
    assert report["summary"]["messages"] == 325
    assert report["summary"]["max_chars"] <= cfg.data.max_chars
    assert all(c["passed"] for c in report["checks"].values())


def test_unknown_classes_are_a_config_error(task, tmp_path):
    cfg = make_cfg(_project(tmp_path), "task.classes=[billing,weather]")
    with pytest.raises(ConfigError, match="weather"):
        task.generate(cfg, tmp_path / "data")


def test_a_bad_recipe_value_is_named(task, tmp_path):
    cfg = make_cfg(_project(tmp_path), "data.typo_rate=0.9")
    with pytest.raises(ConfigError, match=r"data\.typo_rate"):
        task.generate(cfg, tmp_path / "data")


# --- validation: each bad case, named with its file ----------------------------------------


def _manifest(folder: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (folder / "labels" / f"{split}.jsonl").read_text().splitlines()]


def _write_manifest(folder: Path, split: str, rows: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "labels" / f"{split}.jsonl").write_text(text)


def _empty(d: Path) -> str:
    (d / "texts/val/val_00003.txt").write_bytes(b"  ?! \n")
    return "texts/val/val_00003.txt"


def _not_utf8(d: Path) -> str:
    (d / "texts/val/val_00004.txt").write_bytes(b"caf\xe9 order")
    return "texts/val/val_00004.txt"


def _too_long(d: Path) -> str:
    (d / "texts/test/test_00001.txt").write_text("where is my order " * 200)
    return "texts/test/test_00001.txt"


def _unknown_label(d: Path) -> str:
    rows = _manifest(d, "train")
    rows[7]["intent"] = "weather"
    _write_manifest(d, "train", rows)
    return rows[7]["file"]


def _leak(d: Path) -> str:
    train = d / "texts/train/train_00010.txt"
    # the same message in other case and spacing is still the same message
    (d / "texts/test/test_00010.txt").write_text("  " + train.read_text().upper() + " ")
    return "texts/test/test_00010.txt"


def _conflict(d: Path) -> str:
    rows = _manifest(d, "train")
    (d / rows[6]["file"]).write_bytes((d / rows[5]["file"]).read_bytes())
    return rows[6]["file"]  # rows 5 and 6 have different intents (they take turns)


def _missing_file(d: Path) -> str:
    (d / "texts/val/val_00002.txt").unlink()
    return "texts/val/val_00002.txt"


def _unlisted_file(d: Path) -> str:
    (d / "texts/train/stray.txt").write_text("hello, my parcel is late")
    return "texts/train/stray.txt"


def _bad_manifest_line(d: Path) -> str:
    path = d / "labels/test.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    return "labels/test.jsonl"


def _class_missing_from_train(d: Path) -> str:
    rows = [r for r in _manifest(d, "train") if r["intent"] != "account"]
    _write_manifest(d, "train", rows)
    for p in (d / "texts/train").iterdir():  # keep the layout clean: only the balance is off
        if f"texts/train/{p.name}" not in {r["file"] for r in rows}:
            p.unlink()
    return "labels/train.jsonl"


@pytest.mark.parametrize(
    ("breaker", "check"),
    [
        (_empty, "readable"),
        (_not_utf8, "readable"),
        (_too_long, "length"),
        (_unknown_label, "labels"),
        (_leak, "leakage"),
        (_conflict, "label_consistency"),
        (_missing_file, "layout"),
        (_unlisted_file, "layout"),
        (_bad_manifest_line, "layout"),
        (_class_missing_from_train, "class_balance"),
    ],
)
def test_validate_names_each_bad_case(task, cfg, data_dir, tmp_path, breaker, check):
    copy = Path(shutil.copytree(data_dir, tmp_path / "copy"))
    rel = breaker(copy)
    report = task.validate(cfg, copy)
    assert [p[0] for p in report["problems"]] == [str(copy / rel)], report["problems"]
    failed = [name for name, c in report["checks"].items() if not c["passed"]]
    assert failed == [check]


def test_validate_wants_the_folder(task, cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="generate"):
        task.validate(cfg, tmp_path / "nothing")


# --- layout ---------------------------------------------------------------------------------


def test_write_split_round_trips_labels_stems_and_bytes(task, data_dir, tmp_path):
    examples = task.read_split(data_dir, "test")[:4]
    examples[1] = Example(examples[1].input, {**examples[1].label, "sha256": "ab", "x": [1]})
    examples[2] = Example(examples[2].input, examples[2].label, stem="fb-v1-00000")
    examples[3] = Example(examples[3].input, examples[3].label, stem=None)
    task.write_split(tmp_path / "version", "train", examples)
    back = task.read_split(tmp_path / "version", "train")
    assert [e.label for e in back] == [e.label for e in examples]
    assert [e.input.read_bytes() for e in back] == [e.input.read_bytes() for e in examples]
    assert [e.stem for e in back] == ["test_00000", "train_00001", "fb-v1-00000", "train_00003"]
    task.write_split(tmp_path / "version", "test", [])
    assert task.read_split(tmp_path / "version", "test") == []


def test_write_split_may_rewrite_its_own_split(task, data_dir, tmp_path):
    copy = Path(shutil.copytree(data_dir, tmp_path / "copy"))
    before = task.read_split(copy, "val")
    extra = task.read_split(data_dir, "test")[0]
    extra = Example(extra.input, extra.label, stem="fb-v1-00000")
    texts = [e.input.read_bytes() for e in before] + [extra.input.read_bytes()]
    task.write_split(copy, "val", [*before, extra])
    after = task.read_split(copy, "val")
    assert [e.input.read_bytes() for e in after] == texts
    assert sorted(p.name for p in (copy / "texts/val").iterdir()) == sorted(
        f"{e.stem}.txt" for e in after
    )


@pytest.mark.parametrize(
    ("label", "stem", "why"),
    [
        ({}, None, "no 'intent'"),
        ({"intent": "billing", "file": "x"}, None, "'file' key"),
        ({"intent": "billing"}, "../escape", "not a plain file name"),
        ({"intent": "billing"}, "test_00000", "used twice"),
    ],
)
def test_write_split_checks_before_writing(task, data_dir, tmp_path, label, stem, why):
    good = task.read_split(data_dir, "test")[0]
    bad = Example(good.input, label, stem=stem)
    with pytest.raises(ValueError, match=why):
        task.write_split(tmp_path / "v", "train", [good, bad])
    assert not (tmp_path / "v").exists()


def test_read_split_names_a_missing_split(task, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels/train\.jsonl"):
        task.read_split(tmp_path, "train")
