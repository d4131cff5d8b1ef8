"""The task contract holds: framework code never names or imports a task, every registered task
is a complete `Task`, and a task that leaves out an optional part is told which method to add
(`MissingTaskPart`) when a feature needs it, never an ImportError or AttributeError."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import liveml
from liveml.tasks import get_task, task_names
from liveml.tasks.base import Example, Headline, MissingTaskPart, Task

PACKAGE = Path(liveml.__file__).resolve().parent
BUILT_IN = ("defects", "speech")


def framework_files() -> list[Path]:
    """Every source file of liveml outside the built-in tasks' folders."""
    task_dirs = [PACKAGE / "tasks" / name for name in BUILT_IN]
    return [
        p
        for p in sorted(PACKAGE.rglob("*"))
        if p.suffix in (".py", ".html")
        and p.is_file()
        and not any(d in p.parents for d in task_dirs)
        and "__pycache__" not in p.parts
    ]


def test_framework_code_never_names_a_built_in_task():
    pattern = re.compile("|".join(BUILT_IN))
    found = []
    for path in framework_files():
        rel = path.relative_to(PACKAGE).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "framework code names a built-in task:\n" + "\n".join(found)


def test_framework_code_never_imports_a_task_folder():
    folders = {p.name for p in (PACKAGE / "tasks").iterdir() if p.is_dir()} - {"__pycache__"}
    into_a_task = re.compile(r"liveml\.tasks\.(?!base\b)\w+")
    found = []
    for path in framework_files():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "liveml.tasks":  # `from liveml.tasks import <folder>`
                    names += [f"liveml.tasks.{a.name}" for a in node.names if a.name in folders]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                names = [ast.unparse(a) for a in node.args]  # any computed module path counts
                names = [n for n in names if "liveml.tasks" in n or "{" in n]
            for name in names:
                if into_a_task.search(name) or "{" in name:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert found == [], "framework code imports a task's folder:\n" + "\n".join(found)


@pytest.mark.parametrize("name", task_names())
def test_every_registered_task_is_complete(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert isinstance(task.headline, Headline) and task.headline.metric
    assert isinstance(task.suffixes, tuple) and task.suffixes
    assert all(isinstance(s, str) and s and not s.startswith(".") for s in task.suffixes)
    assert isinstance(task.media_types, frozenset) and task.media_types
    assert all("/" in t for t in task.media_types)
    assert all(isinstance(k, str) and v for k, v in task.scenarios.items())
    for schema in (task.model_schema, task.data_schema):
        assert isinstance(schema, type)


def test_built_in_tasks_are_registered():
    assert set(BUILT_IN) <= set(task_names())


# --- a minimal task: only the required parts ------------------------------------------------


class Minimal(Task):
    """A task with the required methods only, over a one-file-per-example layout:
    <split>/<stem>.bin and <split>/labels.json ({stem: label})."""

    name = "minimal"
    model_schema = dict
    data_schema = dict
    headline = Headline("accuracy", higher_is_better=True)
    suffixes = ("bin",)
    media_types = frozenset({"application/x-minimal"})

    def generate(self, cfg, out_dir):
        return {}

    def validate(self, cfg, data_dir):
        return {"problems": []}

    def read_split(self, data_dir, split):
        labels = Path(data_dir) / split / "labels.json"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} is missing; fix: write the split first")
        records = json.loads(labels.read_text())
        return [Example(Path(data_dir) / split / f"{s}.bin", r, stem=s) for s, r in records.items()]

    def write_split(self, data_dir, split, examples):
        folder = Path(data_dir) / split
        folder.mkdir(parents=True, exist_ok=True)
        records = {}
        for i, e in enumerate(examples):
            stem = e.stem or f"{split}_{i:05d}"
            dest = folder / f"{stem}.bin"
            if dest != e.input:
                dest.write_bytes(Path(e.input).read_bytes())
            records[stem] = e.label
        (folder / "labels.json").write_text(json.dumps(records))

    def datamodule(self, cfg, data_dir):
        raise NotImplementedError

    def module(self, cfg):
        raise NotImplementedError

    def evaluate(self, cfg, module, data_dir, plots_dir):
        return {}

    def deployable(self, module):
        return module

    def export_inputs(self, cfg, data_dir, n=3):
        return []

    def signature(self, example):
        return {"inputs": [], "outputs": []}

    def intended_use(self, cfg):
        return "a test"

    def predictor(self, runtime, limits):
        raise NotImplementedError


@pytest.fixture
def minimal_data(tmp_path) -> Path:
    """A dataset of the minimal layout: 4 train, 2 val, 2 test inputs."""
    task, root = Minimal(), tmp_path / "data"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        src = tmp_path / "src" / split
        src.mkdir(parents=True)
        examples = []
        for i in range(n):
            (src / f"{i}.bin").write_bytes(f"{split}-{i}".encode())
            examples.append(Example(src / f"{i}.bin", {"y": i % 2}))
        task.write_split(root, split, examples)
    return root


def cfg():
    return OmegaConf.create({"seed": 0, "data": {"seed": 3}})


def needs(method: str):
    return pytest.raises(MissingTaskPart, match=f"`{method}`")


def test_missing_monitoring_parts_are_named(minimal_data):
    from liveml.monitoring.monitor import draw_inputs, profile_inputs

    task = Minimal()
    with needs("draw_input") as info:
        draw_inputs(task, cfg(), 2, stream=0)
    assert info.value.task == "minimal" and info.value.method == "draw_input"
    assert "docs/tasks.md" in str(info.value)
    with needs("drifted_recipe"):
        draw_inputs(task, cfg(), 2, stream=0, scenario="darker", strength=0.5)
    with needs("input_features"):
        profile_inputs(task, None, [b"input"])
    assert draw_inputs(task, cfg(), 0, stream=0) == []  # nothing to draw, nothing needed


def test_missing_feedback_parts_are_named(minimal_data, tmp_path):
    from liveml.data.feedback import merge, score, write_version

    task = Minimal()
    with needs("ground_truth"):
        task.ground_truth([minimal_data])
    with needs("quality"):
        score(task, cfg(), None, minimal_data, "test")
    # Without the optional rules, versions and their merge still work through the layout.
    truth = {}
    for split in ("train", "val", "test"):
        for e in task.read_split(minimal_data, split):
            from liveml.data.feedback import sha256_file

            truth[sha256_file(e.input)] = {**e.label, "source": split}
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    inputs = []
    for i in range(6):
        (traffic / f"{i}.bin").write_bytes(f"new-{i}".encode())
        inputs.append(traffic / f"{i}.bin")
        truth[sha256_file(traffic / f"{i}.bin")] = {"y": 1, "source": "traffic"}
    dup = next(iter(task.read_split(minimal_data, "val"))).input  # a val input: no leaking
    counts = write_version(task, [*inputs, dup], truth, tmp_path / "v1", holdout=0.0)
    assert counts == {"train": 7, "test": 0, "unlabelled": 0, "duplicates": 0, "inputs": 7}
    result = merge(task, minimal_data, [tmp_path / "v1"])
    assert result["train"] == 6 and result["versions"][0]["skipped"] == {"duplicate": 1}
    stems = [e.stem for e in task.read_split(minimal_data, "train")]
    assert stems[:4] == [f"train_{i:05d}" for i in range(4)]
    assert stems[4:] == [f"fb-v1-{i:05d}" for i in range(6)]


def test_layout_dataset_reads_any_task(minimal_data):
    from liveml.data.layout import LayoutDataset

    task = Minimal()
    ds = LayoutDataset(task, minimal_data, "train")
    assert len(ds) == 4 and ds.labels() == [{"y": 0}, {"y": 1}, {"y": 0}, {"y": 1}]
    path, label = ds[1]
    assert path.read_bytes() == b"train-1" and label == {"y": 1}

    def decode(path, label, epoch=None, index=None):
        return path.read_bytes(), label["y"], epoch, index

    ds = LayoutDataset(task, minimal_data, "train", transform=decode)
    assert ds[2] == (b"train-2", 0, None, None)
    assert ds[(3, 2)] == (b"train-2", 0, 3, 2)
    with pytest.raises(FileNotFoundError, match="fix"):
        LayoutDataset(task, minimal_data, "nope")
