"""The `liveml` command: fast help, lineage of a model, params check, reproduce, clear errors."""

from __future__ import annotations

import json
import os
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
    for name in ("params", "lineage", "runs", "reproduce", "init", "new-task"):
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
    conf = tiny_project.conf_dir / "trainer" / "defects.yaml"
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


# --- conventions: exit status, --json, pipes, --version, clear errors (docs/cli.md) ----------


def run_liveml(project, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`liveml ARGS` in `project`, a real process (its exit status is what scripts see)."""
    return subprocess.run(
        [LIVEML, *args],
        cwd=project.root,
        env={**os.environ, "LIVEML_ROOT": str(project.root), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


RUN_IDS = ["20261125-010000-00000001", "20261125-020000-00000002", "20261125-030000-00000003"]


@pytest.fixture
def store_project(tiny_project, tmp_path):
    """A project whose run store holds three hand-made runs (no training)."""
    from liveml.tracking.runs import RunStore

    from runrecords import make_record, save_runs

    records = [
        make_record(rid, lr=0.001 * (i + 1), metrics={"train/loss": 0.5, "val/map": 0.1 * i})
        for i, rid in enumerate(RUN_IDS)
    ]
    save_runs(RunStore.for_project(tiny_project), records, tmp_path)
    return tiny_project


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    out = subprocess.run([LIVEML, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == f"liveml {version('liveml')}\n"


def test_tasks_lists_every_registered_task_with_its_entry_point():
    from liveml.tasks import installed

    out = subprocess.run([LIVEML, "tasks", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = {t["name"]: t["entry_point"] for t in json.loads(out.stdout)}
    assert listed == {name: ep.value for name, ep in installed().items()}
    text = subprocess.run([LIVEML, "tasks"], capture_output=True, text=True, timeout=60).stdout
    assert [line.split()[0] for line in text.splitlines()] == sorted(listed)


def test_help_and_docs_document_the_exit_status():
    out = subprocess.run([LIVEML, "--help"], capture_output=True, text=True)
    assert "exit status" in out.stdout
    for line in ("0    done", "1    a finding", "2    nothing done", "141  stdout"):
        assert line in out.stdout
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "| 1 | done, and a **finding**" in doc and "| 2 | nothing done" in doc


def test_an_empty_store_is_not_an_error_for_any_command(tiny_project):
    for args in (["runs"], ["compare"], ["compare", "--task", "defects", "--metrics", "val/*"]):
        out = run_liveml(tiny_project, *args)
        assert out.returncode == 0, out.stderr
        assert out.stdout == ""  # stdout is the answer: nothing
        assert "no runs in" in out.stderr and "make repro" in out.stderr
        out = run_liveml(tiny_project, *args, "--json")
        assert out.returncode == 0 and json.loads(out.stdout) == [], out.stdout


def test_json_errors_are_json_on_stdout_too(store_project):
    for args in (["lineage", "no-such-run", "--json"], ["compare", "--json", "--sort", "nope"]):
        out = run_liveml(store_project, *args)
        assert out.returncode == 2
        answer = json.loads(out.stdout)
        assert answer["exit_code"] == 2 and answer["error"] in out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_json_holds_no_nan(store_project):
    from liveml.tracking.runs import RunStore

    from runrecords import make_record, save_runs

    nan = make_record("20261125-040000-00000004", metrics={"train/loss": float("nan")})
    save_runs(RunStore.for_project(store_project), [nan], store_project.root)
    for args in (["runs", "--json"], ["lineage", nan["run_id"], "--json"]):
        out = run_liveml(store_project, *args)
        assert "NaN" not in out.stdout
        json.loads(out.stdout, parse_constant=reject)  # strict JSON: no NaN, no Infinity


def reject(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def pipe_to(reader: str, project, *args: str) -> tuple[int, str, str]:
    """`liveml ARGS | READER` through a real pipe: (liveml's status, reader's output, liveml's
    stderr)."""
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    writer = subprocess.Popen(
        [LIVEML, *args], cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = subprocess.Popen(reader.split(), stdin=writer.stdout, stdout=subprocess.PIPE)
    writer.stdout.close()  # only the reader holds the read end: its exit closes the pipe
    shown = head.communicate(timeout=60)[0].decode()
    err = writer.stderr.read().decode()
    return writer.wait(timeout=60), shown, err


@pytest.mark.parametrize("args", [["runs"], ["compare", "--json"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(store_project, args):
    code, shown, err = pipe_to("head -1", store_project, *args)
    assert err == "" and code in (0, 141)
    assert shown.startswith(RUN_IDS[0] if args == ["runs"] else "[")

    code, shown, err = pipe_to("true", store_project, *args)  # reads nothing at all
    assert err == "" and code in (0, 141), err


@pytest.mark.parametrize("args", [["runs"], ["compare", "--json"], ["lineage", RUN_IDS[0]]])
def test_a_closed_stdout_gives_the_documented_status(store_project, args):
    """Written as it goes (PYTHONUNBUFFERED), the command is cut short: 141. Buffered, it had
    finished when the pipe failed: its own status, 0."""
    for unbuffered, want in (("1", 141), ("", 0)):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the command writes
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env.update(LIVEML_ROOT=str(store_project.root), PYTHONUNBUFFERED=unbuffered)
        if not unbuffered:
            del env["PYTHONUNBUFFERED"]
        proc = subprocess.run(
            [LIVEML, *args], cwd=store_project.root, env=env, stdout=write_end,
            stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
        os.close(write_end)
        assert (proc.returncode, proc.stderr) == (want, ""), (unbuffered, proc.stderr)


def test_runs_after_metrics_globs_are_runs(store_project):
    a, b, c = RUN_IDS
    out = run_liveml(store_project, "compare", "--metrics", "val/*", a, c, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["run"] for r in rows] == [a, c]
    assert "val/map" in rows[0] and "train/loss" not in rows[0]

    out = run_liveml(store_project, "compare", a, "--metrics", "train/*", b, "--json")
    assert [r["run"] for r in json.loads(out.stdout)] == [a, b]  # RUNs on both sides

    both = run_liveml(
        store_project, "compare", "--json", "--metrics", "val/*", "--metrics", "train/*"
    )
    comma = run_liveml(store_project, "compare", "--json", "--metrics", "val/*,train/*")
    assert json.loads(both.stdout) == json.loads(comma.stdout)
    assert {"val/map", "train/loss"} <= set(json.loads(both.stdout)[0])

    # The old spelling, two globs after one flag: the second is no run, and the fix says so.
    out = run_liveml(store_project, "compare", "--metrics", "val/*", "train/*")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "--metrics 'val/*' --metrics 'train/*'" in out.stderr


def test_monitor_without_a_trained_model_names_the_fix(tiny_project):
    from liveml.core.config import write_params

    write_params(tiny_project)
    t = time.perf_counter()
    out = run_liveml(tiny_project, "monitor", "defects")
    assert time.perf_counter() - t < 10  # refused before torch is imported (~0.5 s measured)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Errno" not in out.stderr
    assert "data/defects/model/run.json is missing" in out.stderr
    assert "make repro" in out.stderr and "dvc repro" in out.stderr


def test_errors_outside_a_project_name_the_fix(tmp_path):
    out = subprocess.run(
        [LIVEML, "params"], cwd=tmp_path, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "LIVEML_ROOT"},
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "LIVEML_ROOT" in out.stderr


@pytest.mark.parametrize("argv", [["model.lrr=1"], ["-m", "model.lrr=0.1,0.2"]])
def test_a_misspelt_training_override_gets_liveml_message(tiny_project, argv):
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", *argv],
        cwd=tiny_project.root,
        env={**os.environ, "LIVEML_ROOT": str(tiny_project.root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"the override `{argv[-1]}`: unknown key `model.lrr`" in out.stderr
    assert "Allowed keys under `model`:" in out.stderr and " lr," in out.stderr
    assert "+model.lrr" not in out.stderr and "append" not in out.stderr
    assert not (tiny_project.root / "multirun").exists()  # refused before any job started


@pytest.fixture
def broken_command():
    """Factory: register `liveml broken`, a command raising `error` (a real COMMANDS entry)."""
    from liveml.cli import COMMANDS, command

    def make(error: BaseException):
        @command("broken", "fails", lambda p: p.add_argument("--json", action="store_true"))
        def broken(args):
            raise error

    yield make
    COMMANDS.pop("broken", None)


def test_a_crash_is_status_3_not_a_finding(broken_command, capsys):
    broken_command(RuntimeError("boom"))
    assert main(["broken", "--json"]) == 3  # 1 would read as "drift found" to a cron job
    out = capsys.readouterr()
    assert "Traceback" in out.err and "RuntimeError: boom" in out.err
    assert "please report it" in out.err
    assert json.loads(out.out)["exit_code"] == 3

    broken_command(KeyboardInterrupt())
    assert main(["broken"]) == 130
    assert capsys.readouterr().err == "liveml broken: interrupted\n"


def test_runs_export_then_import_moves_runs_once_and_refuses_a_conflict(store_project, tmp_path):
    from conftest import make_project
    from liveml.tracking.runs import RunStore

    from runrecords import make_record, save_runs

    bundle = tmp_path / "runs.tar.gz"
    assert run_liveml(store_project, "runs", "export", str(bundle)).returncode == 0
    other = make_project(tmp_path / "laptop")
    first = run_liveml(other, "runs", "import", str(bundle))
    assert first.returncode == 0, first.stderr
    listed = json.loads(run_liveml(other, "runs", "--json").stdout)
    assert sorted(r["run_id"] for r in listed) == RUN_IDS
    again = run_liveml(other, "runs", "import", str(bundle), "--json")
    assert again.returncode == 0 and sorted(json.loads(again.stdout)["present"]) == RUN_IDS

    # The same id with another record: refused whole, both files named, nothing written.
    clash = make_project(tmp_path / "clash")
    (tmp_path / "c").mkdir()
    save_runs(RunStore.for_project(clash), [make_record(RUN_IDS[0], lr=0.5)], tmp_path / "c")
    source = str(store_project.root / "runs")
    refused = run_liveml(clash, "runs", "import", source)
    assert refused.returncode == 2 and "--skip-conflicts" in refused.stderr
    assert refused.stderr.count("run.json") >= 2
    assert len(json.loads(run_liveml(clash, "runs", "--json").stdout)) == 1
    skipped = run_liveml(
        clash, "runs", "import", str(store_project.root / "runs"), "--skip-conflicts"
    )
    assert skipped.returncode == 1
    assert len(json.loads(run_liveml(clash, "runs", "--json").stdout)) == 3

    for args in (["runs", "import"], ["runs", "--run", "x"], ["runs", "bogus"]):
        assert run_liveml(other, *args).returncode == 2
