"""The `liveml` command: fast help, lineage of a model, params check, reproduce, clear errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liveml.cli import main

LIVEML = str(Path(sys.executable).parent / "liveml")
HEAVY = ("torch", "lightning", "wandb", "dvc", "dvc_data", "hydra", "omegaconf")


def test_help_is_fast_and_imports_nothing_heavy():
    t = time.perf_counter()
    out = subprocess.run([LIVEML, "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    assert out.returncode == 0
    for name in ("params", "lineage", "runs", "reproduce"):
        assert name in out.stdout
    assert elapsed < 5.0  # ~0.05 s measured; generous for a loaded CI machine

    code = (
        "import sys\nfrom liveml.cli import main\n"
        "try:\n    main(['lineage', '--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stdout


@pytest.fixture
def model_dir(tiny_trainable, tiny_cfg, tmp_path) -> Path:
    """A model folder with a real lineage record (no training needed to test the CLI)."""
    from liveml.core.atomic import atomic_write_json
    from liveml.tracking.lineage import new_record
    from liveml.tracking.runs import RunStore

    cfg = tiny_cfg()
    record = new_record(cfg, tiny_trainable, [cfg.paths.data])
    record.update(metrics={"val/map_50": 0.5}, weights_sha256="ab" * 32)
    RunStore.for_project(tiny_trainable, cfg).save(record)
    atomic_write_json(tmp_path / "model" / "run.json", record)
    return tmp_path / "model"


def test_lineage_json_and_summary(model_dir, tiny_trainable, monkeypatch, capsys):
    monkeypatch.setenv("LIVEML_ROOT", str(tiny_trainable.root))
    record = json.loads((model_dir / "run.json").read_text())

    assert main(["lineage", str(model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == record

    assert main(["lineage", record["run_id"][:12]]) == 0  # by run id prefix, from the store
    out = capsys.readouterr().out
    assert record["run_id"] in out and record["fingerprint"] in out
    assert record["data"]["data/defects/raw"] in out and "val/map_50 = 0.5" in out

    assert main(["runs"]) == 0
    assert record["run_id"] in capsys.readouterr().out


def test_unknown_run_is_one_clear_line_exit_2(tiny_project):
    out = subprocess.run(
        [LIVEML, "lineage", "no-such-run"],
        cwd=tiny_project.root,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "no-such-run" in out.stderr and "liveml runs" in out.stderr


def test_params_check_detects_a_stale_params_yaml(tiny_project, monkeypatch, capsys):
    monkeypatch.setenv("LIVEML_ROOT", str(tiny_project.root))
    assert main(["params", "--check"]) == 1  # missing
    assert "missing" in capsys.readouterr().err

    assert main(["params"]) == 0
    assert tiny_project.params_file.read_text().startswith("# GENERATED")
    assert main(["params", "--check"]) == 0

    conf = tiny_project.conf_dir / "model" / "fcos_tiny.yaml"
    conf.write_text(re.sub(r"(?m)^lr: .*$", "lr: 0.0123", conf.read_text()))
    capsys.readouterr()
    assert main(["params", "--check"]) == 1
    assert "model.lr" in capsys.readouterr().err


def test_config_error_is_one_clear_line_exit_2(tiny_project, monkeypatch, capsys):
    monkeypatch.setenv("LIVEML_ROOT", str(tiny_project.root))
    conf = tiny_project.conf_dir / "trainer" / "cpu.yaml"
    conf.write_text(conf.read_text() + "max_epoch: 3\n")  # misspelt key
    assert main(["params"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_epoch" in err and "Allowed keys" in err


def test_reproduce_matches_and_detects_changed_data(
    tiny_trainable, tiny_cfg, tmp_path, monkeypatch, capsys
):
    from liveml.training.run import train

    monkeypatch.setenv("LIVEML_ROOT", str(tiny_trainable.root))
    cfg = tiny_cfg("trainer.max_epochs=1")
    record = train(cfg, out_dir=tmp_path / "model", project=tiny_trainable)
    capsys.readouterr()

    assert main(["reproduce", str(tmp_path / "model"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout holds only the report
    assert report["weights_match"] and report["metrics_match"]
    assert report["reproduced"]["weights_sha256"] == record["weights_sha256"]
    assert report["original"]["run_id"] == record["run_id"]

    # Changed data: refused before training, naming the path and both hashes.
    data = tiny_trainable.path(cfg.paths.data)
    victim = next((data / "images" / "train").iterdir())
    shutil.copyfile(next((data / "images" / "val").iterdir()), victim)
    assert main(["reproduce", record["run_id"]]) == 2
    err = capsys.readouterr().err
    assert "data/defects/raw" in err and record["data"]["data/defects/raw"] in err
    assert "dvc checkout" in err and err.count("\n") == 1
