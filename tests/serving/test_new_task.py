"""A task the framework has never seen is served without a framework edit: registered like any
task, exported by `export_task`, it gets its endpoint `/v1/<task>`, its model card in
/v1/models, its captures, and its own section on the web page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import requests
import torch
from torch import nn

import liveml.tasks
from liveml.release.export import export_task
from liveml.release.modelcard import build_card, write_card
from liveml.serving.config import ServeConfig
from liveml.serving.inputs import InputError
from liveml.serving.predictors import Predictor, Prepared
from liveml.tasks.base import Headline, Task

WIDTH = 4


class Affine(nn.Module):
    """The toy model: y = 2x + 1 over rows of WIDTH numbers, and the row's largest value."""

    def forward(self, x):
        y = 2 * x + 1
        return y, y.max(dim=1).values


class ToyPredictor(Predictor):
    """Bodies of WIDTH little-endian float32 numbers in; the model's two outputs out."""

    parameters = {"round": "decimals of the answer (an integer 0..6)"}  # noqa: RUF012

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        if len(data) != 4 * WIDTH:
            raise InputError(400, "bad_input", f"send {WIDTH} float32 numbers; fix: 16 bytes")
        return Prepared(np.frombuffer(data, "<f4").copy(), key=None, meta={})

    def postprocess(self, outputs, index: int, meta: dict) -> dict:
        y, top = outputs
        return {"y": [float(v) for v in y[index]], "top": float(top[index]), "label": "toy"}

    def options(self, query: Mapping[str, str]) -> dict:
        return {"round": int(query["round"])} if "round" in query else {}

    def select(self, answer: dict, options: dict) -> dict:
        if "round" not in options:
            return answer
        return {**answer, "y": [round(v, options["round"]) for v in answer["y"]]}

    def warmup_input(self) -> Prepared:
        return Prepared(np.zeros(WIDTH, np.float32), None, {})


class ToyTask(Task):
    name = "toy"
    model_schema = dict
    data_schema = dict
    headline = Headline("error", higher_is_better=False)
    suffixes = ("f32",)
    media_types = frozenset({"application/x-float32"})

    def deployable(self, module):
        return module

    def signature(self, example):
        return {
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", WIDTH], "meaning": "x"}],
            "outputs": [
                {"name": "y", "dtype": "float32", "shape": ["N", WIDTH], "meaning": "2x + 1"},
                {"name": "top", "dtype": "float32", "shape": ["N"], "meaning": "max of y"},
            ],
        }

    def intended_use(self, cfg):
        return "toy: doubles numbers and adds one, to show a new task being served."

    def predictor(self, runtime, limits):
        return ToyPredictor(runtime, limits)

    def generate(self, cfg, out_dir):
        raise NotImplementedError

    def validate(self, cfg, data_dir):
        raise NotImplementedError

    def read_split(self, data_dir, split):
        raise NotImplementedError

    def write_split(self, data_dir, split, examples):
        raise NotImplementedError

    def datamodule(self, cfg, data_dir):
        raise NotImplementedError

    def module(self, cfg):
        raise NotImplementedError

    def evaluate(self, cfg, module, data_dir, plots_dir):
        raise NotImplementedError

    def export_inputs(self, cfg, data_dir, n=3):
        raise NotImplementedError


@dataclass
class EntryPoint:
    """What `importlib.metadata` gives the registry for a package's `liveml.tasks` entry."""

    name: str
    value: str = "toypkg:ToyTask"

    def load(self):
        return ToyTask


@pytest.fixture
def toy_registered(monkeypatch):
    """ToyTask installed next to the real tasks, as `pip install` of its package would."""
    found = {**liveml.tasks.installed(), "toy": EntryPoint("toy")}
    monkeypatch.setattr(liveml.tasks, "installed", lambda: found)
    liveml.tasks.get_task.cache_clear()
    yield
    liveml.tasks.get_task.cache_clear()


@pytest.fixture
def toy_export(toy_registered, tmp_path):
    """An export folder of the toy model: both formats and a model card."""
    task = liveml.tasks.get_task("toy")
    out = tmp_path / "export"
    out.mkdir()
    inputs = [torch.rand(1, WIDTH), torch.rand(1, WIDTH)]
    exports = export_task(task, Affine(), inputs, out)
    for info in exports:
        info["file"] = info["file"].rsplit("/", 1)[-1]
    record = {
        "run_id": "20250101-000000-toy",
        "fingerprint": "f" * 64,
        "code": {"commit": "c" * 40, "dirty": False},
        "config": {"task": {"name": "toy"}, "model": {"name": "affine"}},
        "data": {},
        "environment": {},
    }
    card = build_card(
        task="toy",
        run_record=record,
        metrics={"error": 0.0},
        scope={"meets_scope": True, "targets": {}},
        exports=exports,
        classes=[],
        signature=task.signature(inputs[0]),
        intended_use=task.intended_use(None),
    )
    write_card(card, out / "model_card.json")
    return out


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_new_task_gets_its_endpoint_and_card(toy_export, start_server, tmp_path, runtime):
    cfg = ServeConfig(
        models={"toy": str(toy_export)},
        runtime=runtime,
        capture_dir=str(tmp_path / "captures"),
        capture_sample=1.0,
    )
    x = np.array([0.5, -1.0, 2.0, 0.25], "<f4")
    with start_server(cfg) as (url, _):
        (model,) = requests.get(f"{url}/v1/models", timeout=10).json()["models"]
        assert model["task"] == "toy" and model["endpoint"] == "/v1/toy"
        assert model["accepts"] == ["application/x-float32"] and model["suffixes"] == ["f32"]
        assert model["parameters"] == ToyPredictor.parameters
        card = json.loads((toy_export / "model_card.json").read_text())
        assert model["card"] == card and model["runtime"] == runtime

        r = requests.post(
            f"{url}/v1/toy", data=x.tobytes(), headers={"Content-Type": "application/x-float32"}
        )
        assert r.status_code == 200, r.text
        (answer,) = r.json()["results"]
        assert answer["y"] == pytest.approx((2 * x + 1).tolist()) and answer["top"] == 5.0
        rounded = requests.post(f"{url}/v1/toy?round=0", data=x.tobytes()).json()["results"][0]
        assert rounded["y"] == [2.0, -1.0, 5.0, 2.0]
        wrong = requests.post(
            f"{url}/v1/toy", data=x.tobytes(), headers={"Content-Type": "image/png"}
        )
        assert wrong.status_code == 415 and "toy" in wrong.json()["error"]["message"]
        assert requests.post(f"{url}/v1/toy", data=b"abc").json()["error"]["code"] == "bad_input"
    captured = sorted((tmp_path / "captures" / "toy").rglob("*.f32"))
    assert [p.read_bytes() for p in captured] == [x.tobytes(), x.tobytes()]


def test_the_page_offers_a_new_task(toy_export, start_server, tmp_path):
    from browser import Browser

    cfg = ServeConfig(models={"toy": str(toy_export)}, capture_sample=0.0)
    upload = tmp_path / "numbers.f32"
    upload.write_bytes(np.array([1, 2, 3, 4], "<f4").tobytes())
    with start_server(cfg) as (url, _), Browser() as page:
        page.open(url + "/")
        page.wait_for("document.body.dataset.state === 'ready'")
        assert page.evaluate("[...document.querySelectorAll('main section')].length") == 1
        assert page.evaluate("document.getElementById('toy-heading').textContent") == "toy"
        assert "doubles numbers" in page.evaluate(
            "document.getElementById('toy-section').textContent"
        )
        page.evaluate(
            "(() => { const el = document.getElementById('toy-param-round'); el.value = '1';"
            " el.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        page.set_files("#toy-file", [upload])
        page.wait_for("document.body.dataset.state === 'done-toy'", timeout=60)
        shown = page.evaluate("JSON.parse(document.getElementById('toy-answer').textContent)")
        assert shown["y"] == [3.0, 5.0, 7.0, 9.0] and shown["top"] == 9.0
        fields = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#toy-fields dd')]"
            ".map(dd => [dd.dataset.field, dd.textContent]))"
        )
        assert fields == {"top": "9", "label": "toy"}  # plain fields; lists stay in the JSON
        assert "round=1" in page.evaluate("document.getElementById('toy-summary').textContent")
        assert page.console_errors == []
