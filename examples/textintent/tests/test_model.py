"""Training, evaluation, export and serving: a few steps lower the loss, training twice gives
bit-identical weights, the exported model answers a real request through liveml's Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from liveml.core.config import to_dict
from liveml.release.export import export_task
from liveml.serving.inputs import InputError
from liveml.serving.runtime import load_runtime


def fit(task, cfg, data_dir, **trainer):
    """A module trained the way liveml's train() does it: seeded, deterministic kernels, the
    trainer's thread count."""
    L.seed_everything(int(cfg.seed), verbose=False)
    was, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(cfg.trainer.num_threads))
    try:
        module = task.module(cfg)
        options = {"max_epochs": int(cfg.trainer.max_epochs), **trainer}
        L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
            **options,
        ).fit(module, datamodule=task.datamodule(cfg, data_dir))
    finally:
        torch.use_deterministic_algorithms(was)
        torch.set_num_threads(threads)
    return module.eval()


@pytest.fixture(scope="module")
def trained(task, cfg, data_dir):
    return fit(task, cfg, data_dir)


def train_loss(task, cfg, data_dir, module) -> float:
    ds = task.datamodule(cfg, data_dir).dataset("train")
    with torch.inference_mode():
        return float(F.cross_entropy(module.model.eval()(ds.ids), ds.labels))


def test_a_few_steps_lower_the_loss(task, cfg, data_dir):
    fresh = task.module(cfg)
    stepped = fit(task, cfg, data_dir, max_steps=5)
    assert train_loss(task, cfg, data_dir, stepped) < train_loss(task, cfg, data_dir, fresh) - 0.1


def test_init_depends_on_the_seed_alone(task, cfg):
    torch.manual_seed(123)  # global RNG state must not matter
    a = task.module(cfg).state_dict()
    b = task.module(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_twice_gives_bit_identical_weights(task, cfg, data_dir, trained):
    again = fit(task, cfg, data_dir)
    a, b = trained.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_reaches_the_scope_and_writes_its_plot(task, cfg, data_dir, trained, tmp_path):
    metrics = task.evaluate(cfg, trained, data_dir, tmp_path / "plots")
    assert metrics["accuracy"] >= 0.9 and metrics["macro_f1"] >= 0.9, metrics
    assert metrics["n_test"] == cfg.data.n_test
    assert set(metrics) >= {f"f1/{c}" for c in cfg.task.classes}
    [plot] = task.plots(str(tmp_path / "plots"))
    csv = Path(next(iter(plot))).read_text().splitlines()
    assert csv[0] == "actual,predicted" and len(csv) == 1 + cfg.data.n_test
    assert task.quality(cfg, trained, data_dir, "test") == pytest.approx(metrics["accuracy"])


@pytest.fixture(scope="module")
def export_dir(task, cfg, data_dir, trained, tmp_path_factory) -> Path:
    """Both exports made and checked by liveml's export, with a model card like the stage's."""
    out = tmp_path_factory.mktemp("export")
    inputs = task.export_inputs(cfg, data_dir)
    assert [x.shape for x in inputs] == [(1, cfg.model.max_tokens)] * 3
    assert all(x.dtype == torch.int64 for x in inputs)
    exports = export_task(task, trained, inputs, out)
    for info in exports:
        info["file"] = Path(info["file"]).name
    card = {
        "task": "textintent",
        "classes": list(cfg.task.classes),
        "signature": task.signature(inputs[0]),
        "lineage": {"config": to_dict(cfg)},
        "exports": exports,
    }
    (out / "model_card.json").write_text(json.dumps(card))
    return out


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_exported_model_answers_like_the_eager_one(
    task, cfg, data_dir, trained, export_dir, runtime
):
    predictor = task.predictor(load_runtime(export_dir, runtime), {})
    examples = task.read_split(data_dir, "test")[:5]
    answers = predictor.run([predictor.decode(e.input.read_bytes(), None) for e in examples])
    ids = torch.stack(
        [torch.from_numpy(predictor.decode(e.input.read_bytes(), None).tensor) for e in examples]
    )
    with torch.inference_mode():
        eager = torch.softmax(trained(ids), -1).numpy()
    for answer, probs in zip(answers, eager, strict=True):
        assert answer["intent"] == cfg.task.classes[int(probs.argmax())]
        assert answer["confidence"] == pytest.approx(float(probs.max()), abs=1e-3)
        assert list(answer["scores"]) == list(cfg.task.classes)
        assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    right = sum(a["intent"] == e.label["intent"] for a, e in zip(answers, examples, strict=True))
    assert right >= 4


def test_the_predictor_warms_up_and_names_bad_requests(task, export_dir):
    predictor = task.predictor(load_runtime(export_dir, "torch"), {})
    assert predictor.media_types == frozenset({"text/plain"})
    assert predictor.suffix_of(b"hi") == "txt"
    [warm] = predictor.run([predictor.warmup_input()])
    assert warm["intent"] in warm["scores"]
    latin1 = predictor.decode("où est mon colis".encode("latin-1"), "text/plain; charset=latin-1")
    assert latin1.tensor.dtype == np.int64
    for body, media_type, status, code in [
        (b"", None, 422, "empty_text"),
        (b" ... \n", None, 422, "empty_text"),
        (b"caf\xe9", None, 400, "corrupt_text"),
        (b"x " * 1500, None, 413, "text_too_long"),
        (b"hello", "text/plain; charset=klingon", 415, "unsupported_charset"),
    ]:
        with pytest.raises(InputError) as err:
            predictor.decode(body, media_type)
        assert (err.value.status, err.value.code) == (status, code)
        assert "fix:" in err.value.message
