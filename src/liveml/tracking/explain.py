"""`liveml explain A B`: which of code, hyperparameters and data moved a metric from A to B.

A model is code + hyperparameters + data. The runs A and B differ in some of the three parts;
`explain` trains the crossed combinations, code in {A, B} x hyperparameters in {A, B} x data in
{A, B} (a 2x2x2 factorial design, fewer cells when A and B share a part), each part re-created
exactly (`liveml.tracking.recreate`), and reports for the task's headline metric (and any other)
the value of every cell, the main effect of each part (B side minus A side, averaged over the
pairs of cells that differ only in it) and the interactions, with a one-line verdict.

- The parts. Code: the recorded commit plus the stored uncommitted changes. Hyperparameters:
  the recorded resolved config's fingerprint view (seed, task, model, trainer) without the data
  recipe. Data: the data recipe (`config.data`) and the recorded DVC hashes, which go together
  (the recipe makes the data).
- The corners (A, A, A) and (B, B, B) are A and B themselves: not retrained. Their parts are
  re-created like every other cell's and must give A's and B's fingerprints bit for bit; a
  corner that does not is flagged in the report and the verdict (`verify_originals` also
  retrains them and compares the weights).
- A cell trained before (same code, hyperparameters and data: a done record with its
  fingerprint in the run store) is reused: a repeated call trains nothing.
- The new cells run as ONE Hydra multirun through the project's launcher (joblib `parallel`
  on one machine unless conf/config.yaml picks another, e.g. `slurm`), each a normal run
  record of sweep kind `explain` (`liveml compare --sweep explain/`). A cell whose code does
  not accept its config is marked `incompatible` with the error, and the effects are computed
  from the cells that ran.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liveml.core.project import Project

PARTS = ("code", "config", "data")
PART_NAMES = {"code": "code", "config": "hyperparameters", "data": "data"}
SIDES = ("A", "B")
COMBOS = tuple("".join(c) for c in itertools.product(SIDES, repeat=3))  # AAA, AAB, ..., BBB
DEFAULT_LAUNCHER = "parallel"  # liveml/conf/hydra/launcher/parallel.yaml (joblib, 2 jobs)
JOBLIB_LAUNCHERS = ("parallel", "joblib")
DEFAULT_JOBS = 2  # parallel.yaml's n_jobs

# The result a cell's training reports back (besides its status): what the report shows.
RESULT_KEYS = ("run_id", "fingerprint", "weights_sha256", "metrics", "train_seconds", "status")

# The script a cell's subprocess runs with the worktree's code first on the import path. It
# lives in the explain's temp folder (not in the worktree: the code there must stay the run's).
RUNNER = '''"""One cell of `liveml explain` (written by liveml.tracking.explain): trains the cell's
config with the liveml and task code its worktree holds."""
import json
import sys
import traceback
from pathlib import Path

KEYS = __KEYS__
spec = json.loads(Path(sys.argv[1]).read_text())
try:
    import liveml
    from liveml.core.project import Project
    from liveml.training.run import train

    record = train(
        spec["config"],
        out_dir=spec["out_dir"],
        project=Project(Path(spec["root"])),
        resume=False,
        sweep=spec["sweep"],
    )
    found = {k: record.get(k) for k in KEYS}
    found.update(cell="trained", liveml=str(Path(liveml.__file__).resolve()))
except BaseException as e:  # any failure is this cell's: code and config do not go together
    lines = str(e).strip().splitlines()
    found = {
        "cell": "incompatible",
        "error": type(e).__name__ + (": " + lines[0] if lines else ""),
        "traceback": traceback.format_exc()[-6000:],
    }
Path(spec["result"]).write_text(json.dumps(found))
sys.exit(0 if found["cell"] == "trained" else 1)
'''.replace("__KEYS__", repr(RESULT_KEYS))


def _log(msg: str) -> None:
    """A progress line on stderr (stdout holds the report)."""
    print(f"liveml explain: {msg}", file=sys.stderr, flush=True)


class ExplainError(RuntimeError):
    """`liveml explain` cannot run as asked; the message names the problem and the fix."""


@dataclass
class Cell:
    """One distinct combination of parts; `combos` are the nominal cells it stands for (two or
    more when A and B share a part)."""

    sides: str  # whose code, config and data: e.g. "ABA"
    combos: list[str]
    status: str = "planned"  # original | reused | planned | trained | incompatible
    config: dict | None = None
    fingerprint: str | None = None
    record: dict | None = None  # the run's record (original/reused) or its training result
    error: str | None = None
    job: int | None = None
    verify: dict | None = None  # --verify-originals: the corner's retraining

    def side(self, part: str) -> str:
        return self.sides[PARTS.index(part)]

    def metrics(self) -> dict:
        return (self.record or {}).get("metrics") or {}

    def as_dict(self, metric_keys: Sequence[str]) -> dict:
        r = self.record or {}
        out = {
            "cell": self.sides,
            "sides": {PART_NAMES[p]: self.side(p) for p in PARTS},
            "stands_for": self.combos,
            "status": self.status,
            "run_id": r.get("run_id"),
            "fingerprint": r.get("fingerprint") or self.fingerprint,
            "weights_sha256": r.get("weights_sha256"),
            "train_seconds": r.get("train_seconds"),
            "metrics": {k: self.metrics().get(k) for k in metric_keys},
            "error": self.error,
        }
        if self.verify is not None:
            out["verify"] = self.verify
        return out


# --- which runs ---------------------------------------------------------------------------


def resolve_pair(
    refs: Sequence[str], project: Project, store=None
) -> tuple[dict, dict, dict | None]:
    """(record A, record B, the retrain record when one ref named one) from `refs`: two runs
    (ids, prefixes, model folders, run.json paths, or DVC experiment names), or one `retrain`
    record (its champion is A, its challenger B)."""
    from liveml.tracking.runs import RunStore

    store = store or RunStore.for_project(project)
    if len(refs) == 1:
        record = store.get(refs[0])
        if record.get("kind") != "retrain" or not isinstance(record.get("retrain"), dict):
            raise ExplainError(
                f"{refs[0]!r} is one training run; fix: give two runs (`liveml explain A B`), "
                "or one `retrain` record (its champion and challenger)"
            )
        outcome = record["retrain"]
        pair = []
        for role in ("champion", "challenger"):
            rid = (outcome.get(role) or {}).get("run_id")
            if not isinstance(rid, str):
                raise ExplainError(f"retrain record {record['run_id']} names no {role} run")
            found = _candidates(rid, project, store)
            if not found and isinstance(outcome.get("experiment"), str):
                # Not in this store: the model folder at the experiment's commit holds it.
                found = [
                    r
                    for r in experiment_records(project, outcome["experiment"])
                    if r.get("run_id") == rid
                ]
            if not found:
                raise ExplainError(
                    f"the {role} run {rid} of retrain record {record['run_id']} is not in "
                    f"{store.path}; fix: copy its run folder there"
                )
            pair.append(found[0])
        return pair[0], pair[1], record
    if len(refs) != 2:
        raise ExplainError(f"give two runs to explain (got {len(refs)})")
    cands = [_candidates(ref, project, store) for ref in refs]
    for ref, found in zip(refs, cands, strict=True):
        if not found:
            store.resolve(ref)  # raises RunNotFoundError with what was tried
    if len(cands[0]) == len(cands[1]) == 1:
        return cands[0][0], cands[1][0], None
    # DVC experiments: one run per task each; the pair is the runs of their one common task.
    pairs = [(a, b) for a in cands[0] for b in cands[1] if a.get("task") == b.get("task")]
    if len(pairs) != 1:
        listed = "; ".join(f"{r.get('run_id')} ({r.get('task')})" for c in cands for r in c)
        raise ExplainError(
            f"{refs[0]!r} and {refs[1]!r} do not name one pair of runs of one task "
            f"({listed}); fix: give the two run ids"
        )
    return pairs[0][0], pairs[0][1], None


def _candidates(ref: str, project: Project, store) -> list[dict]:
    """The training records `ref` names: one run, or the runs of DVC experiment `ref`."""
    from liveml.tracking.runs import RunNotFoundError, read_record

    try:
        path = store.resolve(ref)
    except RunNotFoundError as e:
        if "ambiguous" in str(e):
            raise
        found = [
            r
            for r in store.list(on_bad=None)
            if isinstance(r.get("sweep"), dict) and r["sweep"].get("experiment") == ref
        ]
        return found or experiment_records(project, ref)
    return [read_record(path)]


def experiment_records(project: Project, name: str) -> list[dict]:
    """The run records in the model folders of DVC experiment `name`, read at its commit (the
    way the retraining reads a challenger): [] when no experiment has that name."""
    from liveml.tracking.lineage import is_commit
    from liveml.tracking.runs import RECORD, record_problem

    out = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"],
        cwd=project.root,
        capture_output=True,
        text=True,
    )
    revs = [
        sha
        for line in out.stdout.splitlines()
        for ref, _, sha in [line.partition(" ")]
        if ref.rsplit("/", 1)[-1] == name and is_commit(sha)
    ]
    if not revs:
        return []
    import yaml
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(project.root), rev=revs[0])
    params = yaml.safe_load(fs.read_text("params.yaml")) if fs.exists("params.yaml") else {}
    records = []
    for cfg in ((params or {}).get("tasks") or {}).values():
        model = str(((cfg or {}).get("paths") or {}).get("model", "")).rstrip("/")
        if model and fs.exists(f"{model}/{RECORD}"):
            record = json.loads(fs.read_text(f"{model}/{RECORD}"))
            if record_problem(record) is None:
                records.append(record)
    return records


# --- the parts and the cells ---------------------------------------------------------------


def hyperparameters(config: Mapping) -> dict:
    """The fingerprint view of a config without the data recipe: the `config` part."""
    from liveml.core.config import fingerprint_view

    return {k: v for k, v in fingerprint_view(dict(config)).items() if k != "data"}


def part_keys(record: Mapping) -> dict[str, bytes]:
    """What each of the three parts of `record` is, as bytes: equal bytes, same part."""
    from liveml.tracking.lineage import canonical_json, code_view

    config = record.get("config") or {}
    return {
        "code": canonical_json(code_view(record.get("code") or {})),
        "config": canonical_json(hyperparameters(config)),
        "data": canonical_json(
            {"recipe": config.get("data"), "hashes": sorted((record.get("data") or {}).values())}
        ),
    }


def check_records(a: dict, b: dict) -> None:
    """Both records are finished training runs of one task, trained on one data path."""
    for name, r in (("A", a), ("B", b)):
        if not isinstance(r.get("config"), dict) or not isinstance(r.get("data"), dict):
            raise ExplainError(f"{name} = {r.get('run_id')} is not a training run's record")
        if len(r["data"]) != 1:
            raise ExplainError(
                f"{name} = {r.get('run_id')} was trained on {len(r['data'])} data paths; "
                "explain needs one"
            )
        if not r.get("weights_sha256"):
            raise ExplainError(f"{name} = {r.get('run_id')} did not finish training")
    if a.get("task") != b.get("task"):
        raise ExplainError(
            f"A = {a.get('run_id')} is a {a.get('task')!r} run, B = {b.get('run_id')} a "
            f"{b.get('task')!r} run: only runs of one task can be crossed"
        )


def plan_cells(a: dict, b: dict) -> list[Cell]:
    """The distinct cells of the 2x2x2 design, (A, A, A) first; equal parts collapse."""
    keys = {"A": part_keys(a), "B": part_keys(b)}
    cells: dict[tuple, Cell] = {}
    for combo in COMBOS:
        key = tuple(keys[side][part] for side, part in zip(combo, PARTS, strict=True))
        if key in cells:
            cells[key].combos.append(combo)
        else:
            cells[key] = Cell(sides=combo, combos=[combo])
    out = list(cells.values())
    for cell in out:
        if "AAA" in cell.combos or "BBB" in cell.combos:
            cell.status = "original"
            cell.record = a if "AAA" in cell.combos else b
            cell.fingerprint = cell.record.get("fingerprint")
    return out


def cell_config(
    cell_sides: str, a: dict, b: dict, *, cell_dir: Path, runs: Path, wandb_dir: Path | None
) -> dict:
    """The resolved config of a cell: the config side's config with the data side's recipe,
    data at the data side's recorded path, checkpoints and model in `cell_dir`, the record in
    the project's run store `runs` (absolute), W&B files with the project's."""
    side = {"A": a, "B": b}
    cfg = copy.deepcopy(side[cell_sides[1]]["config"])
    data_side = side[cell_sides[2]]
    cfg["data"] = copy.deepcopy(data_side["config"].get("data"))
    paths = cfg.setdefault("paths", {})
    paths["data"] = next(iter(data_side["data"]))
    paths["checkpoints"] = str(cell_dir / "checkpoints")
    paths["model"] = str(cell_dir / "model")
    paths["runs"] = str(runs)
    if wandb_dir is not None and isinstance(cfg.get("logger"), dict) and "dir" in cfg["logger"]:
        cfg["logger"]["dir"] = str(wandb_dir)
    return cfg


def predicted_fingerprint(cell_sides: str, a: dict, b: dict, cfg: Mapping) -> str:
    """The fingerprint the cell's run will have: code of its code side, its config's view, the
    data side's hashes at the data side's path."""
    from liveml.core.config import fingerprint_view
    from liveml.tracking.lineage import code_view, fingerprint

    side = {"A": a, "B": b}
    code = code_view(side[cell_sides[0]]["code"])
    return fingerprint(code, fingerprint_view(dict(cfg)), side[cell_sides[2]]["data"])


def cell_keys(cell: Cell, sides: Mapping[str, dict]) -> tuple[bytes, bytes, bytes]:
    """The part keys (see `part_keys`) of a planned cell: what a run of it records."""
    record = {
        "code": sides[cell.side("code")]["code"],
        "config": cell.config,
        "data": sides[cell.side("data")]["data"],
    }
    keys = part_keys(record)
    return keys["code"], keys["config"], keys["data"]


def find_done(store, cells: Iterable[Cell], sides: Mapping[str, dict]) -> None:
    """Mark planned cells reused whose run is in the store: a finished record with the cell's
    code, hyperparameters and data (its fingerprint, whatever folder the data was in)."""
    wanted = {cell_keys(c, sides): c for c in cells if c.status == "planned"}
    if not wanted:
        return
    for record in store.list(on_bad=None):
        if not record.get("weights_sha256") or record.get("status") not in (None, "finished"):
            continue
        if not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
            continue
        keys = part_keys(record)
        cell = wanted.get((keys["code"], keys["config"], keys["data"]))
        if cell is not None and cell.status == "planned":
            cell.status, cell.record = "reused", record


# --- effects ------------------------------------------------------------------------------


def effects(values: Mapping[str, float | None]) -> dict:
    """Effects of switching each part from A to B, from the metric's value per nominal cell
    (`values[combo]`, None where the cell did not run).

    main[part]: the mean over the pairs of cells that differ only in that part and both ran of
    (B side - A side), which is the classic 2^3 main effect when all 8 ran. two_way[p x q]: the
    mean over the squares (one per side of the third part) whose 4 cells ran of
    ((BB - AB) - (BA - AA)) / 2. three_way: when all 8 ran. total: B - A; with all 8 cells,
    total = sum of the main effects + three_way (the two-way terms cancel between the corners).
    """

    def v(combo: str) -> float | None:
        x = values.get(combo)
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    def with_sides(**sides: str) -> str:
        return "".join(sides[p] for p in PARTS)

    main: dict[str, float | None] = {}
    pairs: dict[str, int] = {}
    for part in PARTS:
        others = [p for p in PARTS if p != part]
        diffs = []
        for s in itertools.product(SIDES, repeat=2):
            fixed = dict(zip(others, s, strict=True))
            lo, hi = v(with_sides(**fixed, **{part: "A"})), v(with_sides(**fixed, **{part: "B"}))
            if lo is not None and hi is not None:
                diffs.append(hi - lo)
        main[part] = sum(diffs) / len(diffs) if diffs else None
        pairs[part] = len(diffs)
    two_way: dict[str, float | None] = {}
    for p, q in itertools.combinations(PARTS, 2):
        (r,) = [x for x in PARTS if x not in (p, q)]
        squares = []
        for rs in SIDES:
            y = {(ps, qs): v(with_sides(**{p: ps, q: qs, r: rs})) for ps in SIDES for qs in SIDES}
            if all(x is not None for x in y.values()):
                squares.append(((y["B", "B"] - y["A", "B"]) - (y["B", "A"] - y["A", "A"])) / 2)
        two_way[f"{p} x {q}"] = sum(squares) / len(squares) if squares else None
    three_way = None
    if all(v(c) is not None for c in COMBOS):
        sign = {"A": -1, "B": 1}
        three_way = (
            sum(sign[c[0]] * sign[c[1]] * sign[c[2]] * v(c) for c in COMBOS) / 4  # type: ignore[operator]
        )
    lo, hi = v("AAA"), v("BBB")
    return {
        "a": lo,
        "b": hi,
        "total": None if lo is None or hi is None else hi - lo,
        "main": main,
        "pairs": pairs,
        "two_way": two_way,
        "three_way": three_way,
    }


def _points(values: Iterable[float | None]) -> bool:
    """Whether a metric is a fraction (every value in [0, 1]): shown in points (x 100)."""
    vals = [x for x in values if x is not None]
    return bool(vals) and all(0.0 <= x <= 1.0 for x in vals)


def fmt_change(x: float | None, points: bool) -> str:
    """A change, signed: `+0.8` (points) or `-0.0123` (raw units); exactly 0 is `0.0`."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0.0"
    if points:
        x *= 100
        return f"{x:+.1f}" if abs(x) >= 0.05 else f"{x:+.2g}"
    return f"{x:+.4g}"


def verdict(metric: str, eff: Mapping, *, points: bool, better: str | None = None) -> str:
    """`val/cer +0.8 pt: data +0.7, hyperparameters +0.1, code 0.0` (largest effect first)."""
    unit = " pt" if points else ""
    total = eff["total"]
    head = f"{metric} {fmt_change(total, points)}{unit}"
    if better:
        head += f" ({better})"
    main = eff["main"]
    order = sorted(PARTS, key=lambda p: -abs(main[p]) if main[p] is not None else 1.0)
    parts = [f"{PART_NAMES[p]} {fmt_change(main[p], points)}" for p in order]
    known = [main[p] for p in PARTS if main[p] is not None]
    if total is not None and len(known) == len(PARTS):
        rest = total - sum(known)
        if abs(rest) > 1e-9 * max(1.0, abs(total)):
            parts.append(f"interaction {fmt_change(rest, points)}")
    return f"{head}: {', '.join(parts)}"


def headline_metric(task: str | None, records: Sequence[Mapping]) -> tuple[str | None, bool | None]:
    """(the task's headline metric as the records name it, higher is better), e.g. `val/cer`
    for headline `cer`; (None, None) when the task or the metric is not there."""
    try:
        from liveml.tasks import get_task

        headline = get_task(task).headline
    except Exception:  # task not installed here: the user names metrics with --metrics
        return None, None
    for key in (f"val/{headline.metric}", headline.metric, f"test/{headline.metric}"):
        if all(key in (r.get("metrics") or {}) for r in records):
            return key, headline.higher_is_better
    return None, None


# --- running the cells ----------------------------------------------------------------------


def configured_launcher(project: Project) -> str:
    """The `hydra/launcher` conf/config.yaml picks in its defaults, else `parallel`."""
    import yaml

    try:
        conf = yaml.safe_load((project.conf_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return DEFAULT_LAUNCHER
    for item in conf.get("defaults") or []:
        if isinstance(item, dict):
            for key, value in item.items():
                if str(key).replace("override ", "").strip() == "hydra/launcher" and value:
                    return str(value)
    return DEFAULT_LAUNCHER


@dataclass
class _Worktree:
    root: Path  # the project's folder inside the worktree
    dest: Path  # the worktree itself
    state: dict = field(default_factory=dict)
    code_ok: bool = True


def _make_worktrees(
    project: Project, tmp: Path, groups: dict[tuple, list[Cell]], sides: dict, problems: list
) -> dict[tuple, _Worktree]:
    """One worktree per (code side, data side, classes): the code re-created and checked, the
    data checked out from the DVC cache into it, its params.yaml naming the cell's recipe (so
    the training takes the data at `paths.data`; params.yaml is not part of the code state)."""
    from liveml.tracking.recreate import checkout_code, checkout_data, code_matches

    out = {}
    for n, (key, cells) in enumerate(groups.items()):
        code_side, data_side, _ = key
        dest = tmp / "worktrees" / f"{n}-code{code_side}-data{data_side}"
        root = checkout_code(project, sides[code_side], dest)
        wt = _Worktree(root=root, dest=dest)
        out[key] = wt
        wt.state, wt.code_ok = code_matches(sides[code_side], root)
        if not wt.code_ok:
            problems.append(
                f"the code of {code_side} = {sides[code_side]['run_id']} re-created as "
                f"{wt.state}, not as recorded {sides[code_side]['code']}"
            )
        record = sides[data_side]
        checkout_data(project, record["data"], root, run=record["run_id"])
        if cells and cells[0].config is not None:
            _declare_recipe(root, cells[0].config)
    return out


def _declare_recipe(root: Path, cfg: Mapping) -> None:
    """Make the worktree's params.yaml (when it builds the task) name `cfg`'s data recipe."""
    import yaml

    params_file = root / "params.yaml"
    if not params_file.is_file():
        return
    params = yaml.safe_load(params_file.read_text()) or {}
    task = (cfg.get("task") or {}).get("name")
    entry = (params.get("tasks") or {}).get(task)
    if not isinstance(entry, dict):
        return
    entry["data"] = copy.deepcopy(cfg.get("data"))
    entry.setdefault("task", {})["classes"] = copy.deepcopy((cfg.get("task") or {}).get("classes"))
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def _run_multirun(
    project: Project, tmp: Path, jobs: list[dict], launcher: str, n_jobs: int | None
) -> None:
    """Train `jobs` (cell specs) as one Hydra multirun through `launcher`; each job writes its
    result file (see explain_cell)."""
    import yaml

    specs = {}
    for job in jobs:
        spec_file = Path(job["dir"]) / "spec.json"
        spec_file.write_text(json.dumps(job["spec"]))
        specs[str(job["job"])] = str(spec_file)
    runner = tmp / "runner.py"
    runner.write_text(RUNNER)
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"runner": str(runner), "cells": specs}))
    conf = tmp / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "explain.yaml").write_text(
        yaml.safe_dump(
            {
                "defaults": [{"override hydra/launcher": launcher}, "_self_"],
                "cell": 0,
                "plan": str(plan),
                "hydra": {
                    "searchpath": [f"file://{project.conf_dir}"],
                    "run": {"dir": str(tmp / "hydra-run")},
                    "sweep": {"dir": str(tmp / "sweep"), "subdir": "${hydra.job.num}"},
                    "job": {"chdir": False},
                },
            },
            sort_keys=False,
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "liveml.tracking.explain_cell",
        "--config-dir",
        str(conf),
        "--config-name",
        "explain",
        "-m",
        "cell=" + ",".join(specs),
    ]
    if n_jobs is not None and launcher in JOBLIB_LAUNCHERS:
        cmd.append(f"hydra.launcher.n_jobs={int(n_jobs)}")
    log = tmp / "multirun.log"
    with open(log, "wb") as out:
        proc = subprocess.run(cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        missing = [j for j in jobs if not Path(j["spec"]["result"]).is_file()]
        if missing:
            tail = log.read_text(errors="replace")[-3000:]
            raise ExplainError(
                f"the Hydra multirun (launcher {launcher!r}) failed with status "
                f"{proc.returncode} before {len(missing)} cell(s) ran:\n{tail}"
            )


# --- the whole -----------------------------------------------------------------------------


def explain(
    refs: Sequence[str],
    project: Project | None = None,
    *,
    metrics: Sequence[str] = (),
    dry_run: bool = False,
    verify_originals: bool = False,
    jobs: int | None = None,
    launcher: str | None = None,
    keep: bool = False,
) -> dict:
    """Explain the metric change from run A to run B (`refs`: two runs, two DVC experiments,
    or one `retrain` record). Returns the report (see docs/explain.md); with `dry_run` only
    the plan. `keep` leaves the temp folder (worktrees, logs) for inspection."""
    from liveml.tracking.runs import RunStore

    started = time.perf_counter()
    project = project or Project.find()
    store = RunStore.for_project(project)
    a, b, retrain = resolve_pair(refs, project, store)
    check_records(a, b)
    head, higher = headline_metric(a.get("task"), [a, b])
    keys = list(dict.fromkeys([*([head] if head else []), *metrics]))
    if not keys:
        raise ExplainError(
            f"task {a.get('task')!r} has no headline metric in both runs' metrics; fix: name "
            "one with --metrics (e.g. --metrics val/loss)"
        )
    sides = {"A": a, "B": b}
    launcher = launcher or configured_launcher(project)
    cells = plan_cells(a, b)
    store_path = store.path.resolve()
    wandb_dir = _wandb_dir(project, a)
    tmp = Path(tempfile.mkdtemp(prefix="liveml-explain-"))
    try:
        for cell in cells:
            if cell.status == "planned":
                cell_dir = tmp / "cells" / cell.sides
                cell.config = cell_config(
                    cell.sides, a, b, cell_dir=cell_dir, runs=store_path, wandb_dir=wandb_dir
                )
                cell.fingerprint = predicted_fingerprint(cell.sides, a, b, cell.config)
        find_done(store, cells, sides)
        to_train = [c for c in cells if c.status == "planned"]
        n_jobs = jobs if jobs is not None else default_jobs(launcher, a, b)
        report = _report_head(a, b, retrain, keys, head, higher, launcher, n_jobs)
        trains = len(to_train) + (2 if verify_originals else 0)
        report["estimate"] = _estimate(a, b, trains, n_jobs)
        if dry_run:
            report["cells"] = [c.as_dict(keys) for c in cells]
            report["dry_run"] = True
            return report
        problems: list[str] = []
        _train_cells(
            project,
            tmp,
            cells,
            sides,
            to_train,
            verify_originals,
            launcher,
            n_jobs,
            store_path,
            wandb_dir,
            problems,
        )
        report["cells"] = [c.as_dict(keys) for c in cells]
        report["originals"] = {"reproduced": not problems, "problems": problems}
        report["effects"] = {}
        report["verdicts"] = {}
        incompatible = [c for c in cells if c.status == "incompatible"]
        for key in keys:
            values = {combo: c.metrics().get(key) for c in cells for combo in c.combos}
            values = {k: v for k, v in values.items() if c_ran(cells, k)}
            eff = effects(values)
            pts = _points(values.values())
            eff["unit"] = "points" if pts else "raw"
            report["effects"][key] = eff
            better = None
            if key == head and higher is not None and eff["total"]:
                better = "better" if (eff["total"] > 0) == higher else "worse"
            line = verdict(key, eff, points=pts, better=better)
            if incompatible:
                line += "; not run: " + ", ".join(f"{c.sides} ({c.error})" for c in incompatible)
            if problems:
                line += f" (originals not re-created bit-identically: {'; '.join(problems)})"
            report["verdicts"][key] = line
        report["verdict"] = report["verdicts"][keys[0]]
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        return report
    finally:
        _cleanup(project, tmp, keep)


def c_ran(cells: Sequence[Cell], combo: str) -> bool:
    """Whether the cell standing for `combo` has a value (original, reused or trained)."""
    return any(combo in c.combos and c.status in ("original", "reused", "trained") for c in cells)


def _wandb_dir(project: Project, record: Mapping) -> Path | None:
    logger = (record.get("config") or {}).get("logger") or {}
    return project.home_path(str(logger["dir"])).resolve() if logger.get("dir") else None


def default_jobs(launcher: str, a: Mapping, b: Mapping) -> int | None:
    """Parallel cells on this machine: at most DEFAULT_JOBS, and no more than its CPUs hold at
    the runs' own thread count. The thread count is part of a cell's config (it can change the
    last bits of the weights), so cells cannot be given fewer threads; two 2-thread trainings
    on 2 CPUs ran ~7x slower than one after the other. None: the launcher decides (SLURM)."""
    if launcher not in JOBLIB_LAUNCHERS:
        return None
    threads = max(_threads(r) for r in (a, b))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(DEFAULT_JOBS, (cpus or 1) // threads))


def _threads(record: Mapping) -> int:
    trainer = (record.get("config") or {}).get("trainer") or {}
    try:
        return max(1, int(trainer.get("num_threads") or 1))
    except (TypeError, ValueError):
        return 1


def _report_head(a, b, retrain, keys, head, higher, launcher, n_jobs) -> dict:
    def run(r: Mapping) -> dict:
        return {
            "run_id": r.get("run_id"),
            "fingerprint": r.get("fingerprint"),
            "code": r.get("code"),
            "data": r.get("data"),
            "weights_sha256": r.get("weights_sha256"),
            "train_seconds": r.get("train_seconds"),
        }

    ka, kb = part_keys(a), part_keys(b)
    return {
        "a": run(a),
        "b": run(b),
        "task": a.get("task"),
        "retrain": retrain.get("run_id") if retrain else None,
        "metrics": keys,
        "headline": head,
        "higher_is_better": higher,
        "differs": {PART_NAMES[p]: ka[p] != kb[p] for p in PARTS},
        "launcher": launcher,
        "jobs": n_jobs,
    }


def _estimate(a: Mapping, b: Mapping, trains: int, n_jobs: int | None) -> dict:
    """Time to train the new cells, from the originals' `train_seconds` (their mean per
    cell; cells in rounds of `n_jobs`). Training only: process start and checkouts add."""
    known = [float(r["train_seconds"]) for r in (a, b) if r.get("train_seconds") is not None]
    per = sum(known) / len(known) if known else None
    rounds = math.ceil(trains / n_jobs) if (n_jobs and trains) else (1 if trains else 0)
    return {
        "cells_to_train": trains,
        "seconds_per_cell": None if per is None else round(per, 1),
        "seconds": None if per is None else round(per * rounds, 1),
        "parallel_jobs": n_jobs,
    }


def _train_cells(
    project, tmp, cells, sides, to_train, verify_originals, launcher, n_jobs, runs, wandb, problems
) -> None:
    """Re-create the parts (the corners' checked against the originals' fingerprints), train
    the new cells (and with `verify_originals` the corners) in one multirun, read results."""
    from liveml.core.config import fingerprint_view
    from liveml.tracking.lineage import data_hashes, fingerprint
    from liveml.tracking.sweeps import explain as explain_sweep

    corners = [c for c in cells if c.status == "original"]
    groups: dict[tuple, list[Cell]] = {}
    for cell in corners:
        groups.setdefault(_group(cell, sides, cell.record["config"]), [])
    for cell in to_train:
        groups.setdefault(_group(cell, sides, cell.config), []).append(cell)
    verifying = []
    if verify_originals:
        for cell in corners:
            cell.config = cell_config(
                cell.sides,
                sides["A"],
                sides["B"],
                cell_dir=tmp / "cells" / f"verify-{cell.sides}",
                runs=runs,
                wandb_dir=wandb,
            )
            groups[_group(cell, sides, cell.config)].append(cell)
            verifying.append(cell)
    t0 = time.perf_counter()
    worktrees = _make_worktrees(project, tmp, groups, sides, problems)
    _log(
        f"re-created {len(worktrees)} combination(s) of code and data in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    # The originals' own cells: their re-created parts must give their fingerprints exactly.
    for cell in corners:
        record = cell.record
        wt = worktrees[_group(cell, sides, record["config"])]
        data = data_hashes(wt.root, list(record["data"]))
        got = fingerprint(wt.state, fingerprint_view(record["config"]), data)
        if got != record.get("fingerprint"):
            problems.append(
                f"{cell.sides} = {record['run_id']} re-created with fingerprint {got[:16]}, "
                f"recorded {str(record.get('fingerprint'))[:16]}"
            )
    jobs = []
    a_id, b_id = sides["A"]["run_id"], sides["B"]["run_id"]
    for n, cell in enumerate([*to_train, *verifying]):
        cell.job = n
        cell_dir = tmp / "cells" / (cell.sides if cell in to_train else f"verify-{cell.sides}")
        cell_dir.mkdir(parents=True, exist_ok=True)
        wt = worktrees[_group(cell, sides, cell.config)]
        spec = {
            "root": str(wt.root),
            "config": cell.config,
            "out_dir": str(cell_dir / "model"),
            "result": str(cell_dir / "result.json"),
            "log": str(cell_dir / "train.log"),
            "sweep": explain_sweep(a_id, b_id, n, {PART_NAMES[p]: cell.side(p) for p in PARTS}),
        }
        jobs.append({"job": n, "dir": str(cell_dir), "spec": spec})
    if jobs:
        t0 = time.perf_counter()
        names = ", ".join(c.sides for c in [*to_train, *verifying])
        _log(f"training {len(jobs)} cell(s) ({names}) through the {launcher} launcher")
        _run_multirun(project, tmp, jobs, launcher, n_jobs)
        _log(f"trained in {time.perf_counter() - t0:.1f} s")
    for job, cell in zip(jobs, [*to_train, *verifying], strict=True):
        result_file = Path(job["spec"]["result"])
        result = (
            json.loads(result_file.read_text())
            if result_file.is_file()
            else {
                "cell": "incompatible",
                "error": "the job left no result (see the launcher's log)",
            }
        )
        if cell in verifying:
            ok = result.get("weights_sha256") == cell.record.get("weights_sha256")
            cell.verify = {
                "run_id": result.get("run_id"),
                "weights_sha256": result.get("weights_sha256"),
                "weights_match": ok,
                "error": result.get("error"),
            }
            if not ok:
                problems.append(
                    f"{cell.sides} = {cell.record['run_id']} retrained to other weights "
                    f"({result.get('weights_sha256') or result.get('error')})"
                )
            continue
        if result.get("cell") == "trained":
            cell.status = "trained"
            cell.record = {k: result.get(k) for k in RESULT_KEYS}
            if result.get("fingerprint") != cell.fingerprint:
                cell.error = (
                    f"trained with fingerprint {str(result.get('fingerprint'))[:16]}, "
                    f"planned {str(cell.fingerprint)[:16]}"
                )
        else:
            cell.status = "incompatible"
            cell.error = result.get("error") or "failed"


def _group(cell: Cell, sides: Mapping, cfg: Mapping) -> tuple:
    classes = json.dumps((cfg.get("task") or {}).get("classes"), sort_keys=True)
    return (cell.side("code"), cell.side("data"), classes)


def _cleanup(project: Project, tmp: Path, keep: bool) -> None:
    from liveml.tracking.recreate import remove_worktree

    if keep:
        print(f"liveml: kept the explain folder {tmp}", file=sys.stderr, flush=True)
        return
    worktrees = tmp / "worktrees"
    if worktrees.is_dir():
        for dest in sorted(worktrees.iterdir()):
            remove_worktree(project, dest)
    shutil.rmtree(tmp, ignore_errors=True)


# --- text -----------------------------------------------------------------------------------


def format_report(report: Mapping) -> str:
    """The report as text: the runs, what differs, the cells, the effects, the verdict."""
    keys = report["metrics"]
    a, b = report["a"], report["b"]
    lines = [f"A  {a['run_id']}", f"B  {b['run_id']}"]
    if report.get("retrain"):
        lines.append(f"   (champion and challenger of retrain record {report['retrain']})")
    differs = [name for name, d in report["differs"].items() if d]
    lines.append(f"differ in: {', '.join(differs) or 'nothing (same code, hyperparameters, data)'}")
    pts = {k: (report.get("effects") or {}).get(k, {}).get("unit") == "points" for k in keys}
    header = ["cell", "code", "hyperparameters", "data", "status", "run", *keys]
    rows = []
    for c in report["cells"]:
        s = c["sides"]
        row = [
            c["cell"],
            s["code"],
            s["hyperparameters"],
            s["data"],
            c["status"],
            c.get("run_id") or "-",
        ]
        for k in keys:
            x = c["metrics"].get(k)
            row.append("-" if x is None else f"{x:.6g}")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    lines += [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    for c in report["cells"]:
        if c.get("error"):
            lines.append(f"  {c['cell']}: {c['error']}")
        if c.get("verify"):
            v = c["verify"]
            lines.append(
                f"  {c['cell']} retrained ({v['run_id']}): weights "
                f"{'identical' if v['weights_match'] else 'DIFFERENT'}"
            )
    if report.get("dry_run"):
        e = report["estimate"]
        per = e["seconds_per_cell"]
        lines.append("")
        lines.append(
            f"dry run: {e['cells_to_train']} cell(s) to train"
            + (
                f", about {per:.0f} s each (the originals' mean train_seconds), about "
                f"{e['seconds']:.0f} s in all with {e['parallel_jobs'] or 'all'} parallel job(s) "
                f"(launcher {report['launcher']}; training time only)"
                if per is not None
                else ""
            )
        )
        return "\n".join(lines)
    for k in keys:
        eff = report["effects"][k]
        unit = " pt" if pts[k] else ""
        lines.append("")
        va, vb = ("-" if x is None else f"{x:.6g}" for x in (eff["a"], eff["b"]))
        lines.append(f"{k}: A {va} -> B {vb} ({fmt_change(eff['total'], pts[k])}{unit})")
        for p in PARTS:
            n = eff["pairs"][p]
            same = not report["differs"][PART_NAMES[p]]
            how = "the same in A and B" if same else f"mean of {n} pair(s) of cells"
            lines.append(
                f"  {PART_NAMES[p]:<16} {fmt_change(eff['main'][p], pts[k]):>9}{unit}  ({how})"
            )
        for name, x in eff["two_way"].items():
            if x is not None:
                shown = name.replace("config", "hyperparameters")
                lines.append(f"  {shown:<30} {fmt_change(x, pts[k])}{unit}")
        if eff["three_way"] is not None:
            lines.append(
                f"  {'three-way interaction':<30} {fmt_change(eff['three_way'], pts[k])}{unit}"
            )
    o = report["originals"]
    lines.append("")
    lines.append(
        "originals re-created bit-identically"
        if o["reproduced"]
        else "ORIGINALS NOT RE-CREATED BIT-IDENTICALLY: " + "; ".join(o["problems"])
    )
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)
