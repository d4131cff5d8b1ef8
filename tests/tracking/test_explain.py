"""`liveml explain A B`: the 2x2x2 design over code, hyperparameters and data, its effects and
verdict; end to end on the tiny git + DVC pipeline (real worktrees, DVC cache, Hydra multirun,
training)."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from liveml.core.project import Project
from liveml.tracking.explain import (
    COMBOS,
    ExplainError,
    default_jobs,
    effects,
    explain,
    format_report,
    plan_cells,
    verdict,
)
from liveml.tracking.runs import RunStore

from runrecords import DATA_B, make_record
from tinyrepo import git, run

# --- the effects (pure arithmetic) ----------------------------------------------------------


def linear_model(mu, main, two=None, three=0.0):
    """Values of the 8 cells of y = mu + sum main_p s_p/2 + sum two_pq s_p s_q/2 + three/2 sss
    (s = -1 for A, +1 for B): the classic 2^3 model, whose effects are `main`, `two`, `three`."""
    two = two or {}
    s = {"A": -1, "B": 1}
    out = {}
    for combo in COMBOS:
        sp = dict(zip(("code", "config", "data"), (s[c] for c in combo), strict=True))
        y = mu + sum(main[p] * sp[p] / 2 for p in sp)
        y += sum(v * sp[p] * sp[q] / 2 for (p, q), v in two.items())
        y += three * sp["code"] * sp["config"] * sp["data"] / 2
        out[combo] = y
    return out


def test_effects_of_a_full_design_are_the_classic_ones():
    main = {"code": 0.0, "config": 0.01, "data": -0.07}
    two = {("config", "data"): 0.004, ("code", "data"): -0.002}
    values = linear_model(0.5, main, two, three=0.001)
    eff = effects(values)
    for p, x in main.items():
        assert eff["main"][p] == pytest.approx(x, abs=1e-12)
    assert eff["two_way"]["config x data"] == pytest.approx(0.004, abs=1e-12)
    assert eff["two_way"]["code x data"] == pytest.approx(-0.002, abs=1e-12)
    assert eff["two_way"]["code x config"] == pytest.approx(0.0, abs=1e-12)
    assert eff["three_way"] == pytest.approx(0.001, abs=1e-12)
    # B - A = the main effects + the three-way term (two-way terms cancel between corners).
    assert eff["total"] == pytest.approx(sum(main.values()) + 0.001, abs=1e-12)
    assert eff["pairs"] == {"code": 4, "config": 4, "data": 4}


def test_effects_from_the_cells_that_ran():
    values = linear_model(0.5, {"code": 0.1, "config": 0.2, "data": 0.3})
    values["ABA"] = values["BAB"] = None  # incompatible cells
    eff = effects(values)
    assert eff["pairs"] == {"code": 2, "config": 2, "data": 2}
    for p, x in {"code": 0.1, "config": 0.2, "data": 0.3}.items():
        assert eff["main"][p] == pytest.approx(x)  # additive: every pair gives the effect
    assert eff["three_way"] is None
    # Only the squares whose four cells ran give an interaction.
    assert eff["two_way"]["code x config"] is None
    assert eff["two_way"]["config x data"] is None
    assert eff["two_way"]["code x data"] is None
    values = {c: (1.0 if c == "AAA" else None) for c in COMBOS}
    eff = effects(values)
    assert eff["main"] == {"code": None, "config": None, "data": None} and eff["total"] is None


def test_verdict_in_points_largest_first():
    eff = effects(linear_model(0.2, {"code": 0.0, "config": 0.001, "data": 0.007}))
    line = verdict("val/cer", eff, points=True, better="worse")
    assert line == "val/cer +0.8 pt (worse): data +0.7, hyperparameters +0.1, code 0.0"
    raw = verdict(
        "train/loss",
        effects(linear_model(2.0, {"code": 0, "config": 0, "data": 1.5})),
        points=False,
    )
    assert raw == "train/loss +1.5: data +1.5, code 0.0, hyperparameters 0.0"
    inter = effects(linear_model(0.0, {"code": 0, "config": 0, "data": 0.01}, three=0.002))
    assert "interaction +0.2" in verdict("m", inter, points=True)


# --- the plan (records shaped like real ones) ----------------------------------------------


def test_cells_collapse_when_a_and_b_share_parts():
    a = make_record("20261201-000000-aaaaaaaa", lr=0.004)
    b = make_record("20261201-000001-bbbbbbbb", lr=0.008)  # only hyperparameters differ
    cells = plan_cells(a, b)
    assert [c.sides for c in cells] == ["AAA", "ABA"]
    assert [c.status for c in cells] == ["original", "original"]
    assert sorted(itertools.chain(*(c.combos for c in cells))) == sorted(COMBOS)
    c = make_record("20261201-000002-cccccccc", lr=0.008, data_hash=DATA_B, brightness=0.5)
    cells = plan_cells(a, c)  # hyperparameters and data
    assert [(c.sides, c.status) for c in cells] == [
        ("AAA", "original"),
        ("AAB", "planned"),
        ("ABA", "planned"),
        ("ABB", "original"),
    ]
    d = make_record("20261201-000003-dddddddd", commit="b" * 40, lr=0.008, data_hash=DATA_B)
    assert len(plan_cells(a, d)) == 8
    assert len(plan_cells(a, a)) == 1


def test_parallel_cells_fit_the_cpus_at_the_runs_thread_count():
    import os

    cpus = len(os.sched_getaffinity(0))
    a = make_record("20261201-000000-aaaaaaaa", lr=0.004)
    b = make_record("20261201-000001-bbbbbbbb", lr=0.008)
    for threads in (1, 2, cpus, 4 * cpus):
        a["config"]["trainer"]["num_threads"] = threads
        jobs = default_jobs("parallel", a, b)
        # Never more cells at once than the CPUs hold at that many threads each, at least 1.
        assert jobs == max(1, min(2, cpus // threads)), threads
    a["config"]["trainer"]["num_threads"] = 4 * cpus
    assert default_jobs("parallel", b, a) == 1  # the bigger of the two runs' counts decides
    assert default_jobs("slurm", a, b) is None  # a cluster launcher decides for itself


def test_runs_of_different_tasks_are_refused(tmp_path):
    project = Project(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("seed: 0\n")
    store = RunStore(tmp_path / "runs")
    a = make_record("20261201-000000-aaaaaaaa")
    b = make_record("20261201-000001-bbbbbbbb", task="speech")
    for r in (a, b):
        store.save(r)
    with pytest.raises(ExplainError, match="only runs of one task"):
        explain([a["run_id"], b["run_id"]], project, dry_run=True)
    with pytest.raises(ExplainError, match="one training run"):
        explain([a["run_id"]], project, dry_run=True)


# --- end to end on the tiny pipeline --------------------------------------------------------

# The speech task: its tiny config trains in seconds (the tiny detector takes several times
# longer), and its val/loss moves with the data.
TASK = "speech"
MODULE = "src/liveml/tasks/speech/module.py"


@pytest.fixture
def repo(tiny_pipeline: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    return root


def model_record(repo: Path, task: str = TASK) -> dict:
    return json.loads((repo / f"data/{task}/model/run.json").read_text())


def train_pipeline_config(repo: Path, out: Path, **trainer) -> dict:
    """Train the pipeline's speech config (params.yaml, `trainer` keys changed) in `repo`,
    in this process, as `dvc repro` would; returns the record."""
    from liveml.core.config import load_params, to_dict
    from liveml.training.run import train

    project = Project(repo)
    cfg = to_dict(load_params(TASK, project))
    cfg["trainer"].update(trainer)
    return train(cfg, out_dir=out, project=project, resume=False)


def comment_out(repo: Path, rel: str = MODULE, note: str = "no effect on the weights") -> None:
    path = repo / rel
    path.write_text(path.read_text() + f"\n# {note}\n")


@pytest.mark.slow
def test_no_op_code_and_hyperparameter_changes_explain_nothing(repo: Path, tmp_path: Path):
    """A = the pipeline's speech run (clean tree). B = trained with an uncommitted comment
    edit and an untracked file (code), and another logging interval (a hyperparameter that does
    not touch the weights). explain re-creates B's code from the diff its record stores, trains
    the two crossed cells in one Hydra multirun from their worktrees, and finds every effect
    exactly 0 with bit-identical weights. A second call trains nothing; a run whose diff was
    not stored is refused."""
    a = model_record(repo)
    assert a["code"]["dirty"] is False
    comment_out(repo)
    (repo / "NOTES.md").write_text("an untracked file is code too\n")
    b = train_pipeline_config(repo, tmp_path / "model-b", log_every_n_steps=1)
    assert b["code"]["dirty"] is True and b["code_patch"]["patch"]
    assert b["weights_sha256"] == a["weights_sha256"]

    project = Project(repo)
    store = RunStore.for_project(project)
    before = set(store.ids())
    report = explain([a["run_id"], b["run_id"]], project)
    assert report["differs"] == {"code": True, "hyperparameters": True, "data": False}
    cells = {c["cell"]: c for c in report["cells"]}
    assert list(cells) == ["AAA", "ABA", "BAA", "BBA"]
    assert [cells[c]["status"] for c in cells] == ["original", "trained", "trained", "original"]
    assert report["originals"] == {"reproduced": True, "problems": []}
    assert {c["weights_sha256"] for c in cells.values()} == {a["weights_sha256"]}
    for key in report["metrics"]:
        eff = report["effects"][key]
        assert eff["main"] == {"code": 0.0, "config": 0.0, "data": 0.0}, key
        assert eff["two_way"]["code x config"] == 0.0 and eff["total"] == 0.0
    assert report["verdict"] == "val/cer 0.0 pt: code 0.0, hyperparameters 0.0, data 0.0"

    # Each new cell is a normal run of the explain sweep, trained with its worktree's code.
    new = {i: store.get(i) for i in set(store.ids()) - before}
    assert len(new) == 2
    for rid, record in new.items():
        assert record["sweep"]["kind"] == "explain"
        assert record["sweep"]["name"] == f"explain/{a['run_id']}..{b['run_id']}"
        cell = next(c for c in cells.values() if c["run_id"] == rid)
        assert record["fingerprint"] == cell["fingerprint"]
        code_side = {"A": a, "B": b}[cell["sides"]["code"]]
        assert record["code"] == code_side["code"]
    text = format_report(report)
    assert "originals re-created bit-identically" in text and "BAA" in text

    # Again: both cells are found in the run store; nothing is trained.
    again = explain([a["run_id"], b["run_id"]], project)
    assert [c["status"] for c in again["cells"]] == ["original", "reused", "reused", "original"]
    assert set(store.ids()) == before | set(new)
    plan = explain([a["run_id"], b["run_id"]], project, dry_run=True)
    assert plan["dry_run"] and plan["estimate"]["cells_to_train"] == 0
    assert "dry run: 0 cell(s) to train" in format_report(plan)

    # A dirty run recorded before liveml kept diffs: refused, with the reason and the fix.
    from liveml.tracking.recreate import RecreateError

    old = {k: v for k, v in b.items() if k != "code_patch"}
    old["run_id"] = b["run_id"][:-8] + "0ld0ld00"
    store.save(old)
    with pytest.raises(RecreateError, match=r"does not store .* commit the changes and train"):
        explain([a["run_id"], old["run_id"]], project)


def test_a_dry_run_lists_the_cells_and_their_time(repo: Path):
    """B: another learning rate and another data recipe (a record made for the plan only)."""
    a = model_record(repo)
    b = json.loads(json.dumps(a))
    b["run_id"] = a["run_id"][:-8] + "b0b0b0b0"
    b["config"]["model"]["lr"] = 0.001
    b["config"]["data"]["n_train"] = 4
    b["data"] = {path: DATA_B for path in a["data"]}
    b["train_seconds"], a["train_seconds"] = 30.0, 10.0
    store = RunStore.for_project(Project(repo))
    store.save(b)
    store.save(dict(a, run_id=a["run_id"][:-8] + "a0a0a0a0"))
    refs = [a["run_id"][:-8] + "a0a0a0a0", b["run_id"]]
    plan = explain(refs, Project(repo), dry_run=True, jobs=1)
    assert [(c["cell"], c["status"]) for c in plan["cells"]] == [
        ("AAA", "original"),
        ("AAB", "planned"),
        ("ABA", "planned"),
        ("ABB", "original"),
    ]
    assert plan["estimate"] == {
        "cells_to_train": 2,
        "seconds_per_cell": 20.0,
        "seconds": 40.0,
        "parallel_jobs": 1,
    }
    text = format_report(plan)
    assert "dry run: 2 cell(s) to train, about 20 s each" in text
    assert "about 40 s in all with 1 parallel job(s) (launcher parallel" in text
    assert "differ in: hyperparameters, data" in text


def test_the_command_keeps_the_cli_conventions(repo: Path, monkeypatch, capsys):
    """`liveml explain`: --json is one JSON document, also on errors (exit 2 naming the fix);
    a dry run exits 0."""
    from liveml.cli import main

    monkeypatch.setenv("LIVEML_ROOT", str(repo))
    a = model_record(repo)
    assert main(["explain", a["run_id"], "no-such-run", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 2 and "no run matches 'no-such-run'" in out["error"]
    assert main(["explain", a["run_id"], "--json"]) == 2
    assert "give two runs" in json.loads(capsys.readouterr().out)["error"]
    assert main(["explain", a["run_id"], a["run_id"], "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and [c["cell"] for c in plan["cells"]] == ["AAA"]
    assert plan["headline"] == "val/cer"


@pytest.mark.slow
def test_incompatible_cells_are_named_not_crashed_on(repo: Path):
    """B renames a model key in its (uncommitted) code and config: code A cannot take config B
    and code B cannot take config A. Both crossed cells are marked incompatible with the error,
    and the report explains from the cells that ran."""
    a = model_record(repo)
    for rel in (
        "src/liveml/tasks/speech/config.py",
        "src/liveml/tasks/speech/datamodule.py",
        "conf/model/crnn_ctc.yaml",
    ):
        path = repo / rel
        path.write_text(path.read_text().replace("echo_prob", "echo_probability"))
    env = {"PYTHONPATH": str(repo / "src")}  # B trains with its own code
    run(["liveml", "params"], repo, env=env)
    run([sys.executable, "-m", "liveml.stages.train", TASK], repo, env=env)
    b = model_record(repo)
    assert b["run_id"] != a["run_id"]
    assert "echo_probability" in b["config"]["model"] and b["code"]["dirty"]

    report = explain([a["run_id"], b["run_id"]], Project(repo), metrics=["val/loss"])
    cells = {c["cell"]: c for c in report["cells"]}
    assert list(cells) == ["AAA", "ABA", "BAA", "BBA"]
    for name in ("ABA", "BAA"):
        assert cells[name]["status"] == "incompatible"
        assert "echo_prob" in cells[name]["error"], cells[name]["error"]
    eff = report["effects"]["val/loss"]
    assert eff["pairs"] == {"code": 0, "config": 0, "data": 2}  # data: the same in A and B
    assert eff["main"]["code"] is None and eff["main"]["config"] is None
    assert eff["total"] == pytest.approx(b["metrics"]["val/loss"] - a["metrics"]["val/loss"])
    verdict_line = report["verdicts"]["val/loss"]
    assert "not run: ABA (" in verdict_line and "BAA (" in verdict_line
    assert "code n/a" in verdict_line and "hyperparameters n/a" in verdict_line
    assert "ABA: " in format_report(report)


def set_yaml(path: Path, **values) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# The proof of the issue: 8 cells (6 trained, plus the 2 originals retrained by
# --verify-originals) in rounds of 2 parallel jobs: 1-2 minutes on 2 free cores.
@pytest.mark.slow
def test_proof_the_change_is_attributed_to_the_part_that_made_it(repo: Path):
    """A = the pipeline's speech run. B differs in all three parts, in known ways: a data
    recipe that hurts (far noisier clips: SNR 5-8 dB instead of 15-40), a slightly different
    learning rate, and a committed comment edit plus an uncommitted one (code that cannot
    change the weights). explain attributes the change to data, gives code an effect of exactly
    0 with bit-identical weights across every code pair, re-creates B's dirty tree from its
    stored diff, reproduces both originals bit for bit, and trains nothing when asked again."""
    a = model_record(repo)
    comment_out(repo, note="a committed comment")
    recipe = repo / "conf/data/speech.yaml"
    conditions = yaml.safe_load(recipe.read_text())["conditions"]
    set_yaml(recipe, conditions={**conditions, "snr_db": [5, 8]})
    set_yaml(repo / "conf/model/crnn_ctc.yaml", lr=0.00301)
    run(["liveml", "params"], repo)
    git(repo, "commit", "-qam", "noisier data, another learning rate, a comment")
    comment_out(repo, "src/liveml/tasks/speech/datamodule.py", note="an uncommitted comment")
    run(["dvc", "repro", f"{TASK}_train"], repo)  # B's data goes to the DVC cache
    b = model_record(repo)
    assert b["code"]["dirty"] and b["code_patch"]["patch"]
    assert b["code"]["commit"] != a["code"]["commit"] and b["data"] != a["data"]

    project = Project(repo)
    store = RunStore.for_project(project)
    before = set(store.ids())
    started = time.perf_counter()
    report = explain(
        [a["run_id"], b["run_id"]], project, metrics=["val/loss"], verify_originals=True
    )
    print(f"explain wall time {time.perf_counter() - started:.1f} s")
    print(format_report(report))
    assert report["differs"] == {"code": True, "hyperparameters": True, "data": True}
    cells = {c["cell"]: c for c in report["cells"]}
    assert sorted(cells) == sorted(COMBOS)
    assert all(c["status"] in ("original", "trained") for c in cells.values()), cells
    assert report["originals"] == {"reproduced": True, "problems": []}
    assert all(cells[c]["verify"]["weights_match"] for c in ("AAA", "BBB"))

    # Code: every pair of cells that differ only in code has the same weights, effect 0.
    for rest in itertools.product("AB", repeat=2):
        pa, pb = cells["A" + "".join(rest)], cells["B" + "".join(rest)]
        assert pa["weights_sha256"] == pb["weights_sha256"], (pa, pb)
    for key, eff in report["effects"].items():
        assert eff["main"]["code"] == 0.0, key
    # Data made the difference (the headline got worse); the learning rate hardly any.
    cer = report["effects"]["val/cer"]
    assert cer["main"]["data"] > 0 and cer["total"] > 0
    assert abs(cer["main"]["data"]) > 5 * abs(cer["main"]["config"])
    assert report["verdict"].startswith("val/cer +") and "(worse): data +" in report["verdict"]
    loss = report["effects"]["val/loss"]
    assert abs(loss["main"]["data"]) > 5 * abs(loss["main"]["config"])
    assert report["verdicts"]["val/loss"].split(": ", 1)[1].startswith("data ")

    # Asked again: every cell comes from the run store.
    new = set(store.ids()) - before
    assert len(new) == 8  # 6 cells + 2 originals retrained
    again = explain([a["run_id"], b["run_id"]], project, metrics=["val/loss"])
    assert {c["status"] for c in again["cells"]} == {"original", "reused"}
    assert set(store.ids()) == before | new
    assert again["effects"] == report["effects"]
