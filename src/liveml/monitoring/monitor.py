"""Drift monitoring: the inputs a served model sees, cut into windows, each window compared
with the reference profile stored next to the model.

The reference (`paths.reference`, DVC stage `<task>_reference`) profiles fresh draws from the
training recipe, plus the held-out part of every feedback version the model was retrained
with, through the same features and the same model as the windows. Fresh draws rather than the
training split itself: the model is more confident on inputs it was fitted to, so a reference
of training inputs would make every production window look like a confidence drop.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveml.monitoring.drift import Profile

if TYPE_CHECKING:
    from liveml.core.progress import Progress
    from liveml.tasks.base import Task

PROFILE = "profile.npz"
META = "reference.json"
SUMMARY = "summary.json"
REPORT = "report.html"
# Draws for the reference come from this stream of the task's generator; `liveml monitor`
# tests and benches use other streams, so none of them sees the reference's own inputs.
REFERENCE_STREAM = 0
# Draw stream s is the generator's split number STREAM_BASE + s: generators number their own
# splits from 0 (train, val, test), so a draw is never one of the dataset's samples.
STREAM_BASE = 100


class MonitorError(RuntimeError):
    """Monitoring cannot run as asked; the message names the problem and the fix."""


def profile_inputs(
    task: Task, module: Any, inputs: list[bytes], progress: Progress | None = None
) -> tuple[Profile, dict]:
    """(Profile of `inputs`: input features + the model's view, timing per input in ms).
    `progress` (if given) advances by one per input's features and by len(inputs) for the
    model's view."""
    start = time.perf_counter()
    rows = []
    base = progress.done if progress is not None else 0.0
    for i, data in enumerate(inputs):
        rows.append(task.input_features(data))
        if progress is not None:
            progress.update(base + i + 1, f"features of input {i + 1}/{len(inputs)}")
    features_s = time.perf_counter() - start
    if progress is not None:
        progress.update(base + len(inputs), f"the model's view of {len(inputs)} inputs")
    start = time.perf_counter()
    view = task.model_view(module, inputs)
    model_s = time.perf_counter() - start
    if progress is not None:
        progress.update(base + 2 * len(inputs), f"profiled {len(inputs)} inputs")
    for row, conf, cls in zip(rows, view["confidence"], view["predicted_class"], strict=True):
        row["confidence"] = float(conf)
        row["predicted_class"] = str(cls)
    n = max(len(inputs), 1)
    timing = {
        "features_ms_per_input": round(1000 * features_s / n, 3),
        "model_view_ms_per_input": round(1000 * model_s / n, 3),
    }
    return Profile.from_rows(rows, embedding=view["embedding"]), timing


def check_scenario(scenarios: dict[str, str], scenario: str | None, strength: float) -> float:
    """`strength` as a float after the checks every task's drift scenarios share: a known
    scenario, a finite strength >= 0, no strength without a scenario."""
    import math

    if scenario is not None and scenario not in scenarios:
        raise ValueError(
            f"unknown drift scenario {scenario!r}; fix: use one of "
            + "; ".join(f"{k} ({v})" for k, v in scenarios.items())
        )
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"drift strength {strength} is not a finite number >= 0; fix: pass one")
    if scenario is None and strength != 0:
        raise ValueError(
            f"drift strength {strength} without a scenario; fix: name one of {list(scenarios)}"
        )
    return strength


def draw_inputs(
    task: Task,
    cfg: Any,
    n: int,
    *,
    stream: int,
    scenario: str | None = None,
    strength: float = 0.0,
    progress: Progress | None = None,
) -> list[bytes]:
    """`n` fresh inputs of `cfg`'s recipe (drifted by `scenario` at `strength`), as the bytes
    a client sends: input i of stream s comes from `task.sample_rng(data.seed, 100 + s, i)`,
    so draws are deterministic in (data seed, stream, i), streams never overlap the dataset's
    own splits, and input i shows the same draw under every scenario (paired comparisons).
    `progress` (if given) advances by one per input drawn."""
    if scenario is not None and not task.scenarios:
        from liveml.tasks.base import MissingTaskPart

        raise MissingTaskPart(task.name, "drifted_recipe", "drift scenarios (and `scenarios`)")
    strength = check_scenario(task.scenarios, scenario, strength)
    if int(stream) < 0:
        raise ValueError(f"stream={stream}; fix: pass a stream number >= 0")
    recipe = cfg.data
    if scenario is not None and strength != 0:
        recipe = task.drifted_recipe(cfg.data, scenario, strength)
    seed = getattr(cfg.data, "seed", None)
    seed = cfg.seed if seed is None else seed  # a recipe without its own seed: the run's
    out = []
    base = progress.done if progress is not None else 0.0
    for i in range(int(n)):
        rng = task.sample_rng(int(seed), STREAM_BASE + int(stream), i)
        out.append(task.draw_input(rng, recipe, cfg=cfg, index=i))
        if progress is not None:
            progress.update(base + i + 1, f"drawing input {i + 1}/{int(n)}")
    return out


# --- reference ------------------------------------------------------------------------------


def feedback_holdout(task: Task, feedback_dir: Path) -> list[Path]:
    """The held-out inputs (test split) of every feedback version under `feedback_dir`."""
    from liveml.data.feedback import versions

    return [e.input for version in versions(feedback_dir) for e in task.read_split(version, "test")]


def build_reference(cfg: Any, project: Any) -> dict:
    """Profile the trained model's input distribution into `paths.reference` (atomically)."""
    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.core.config import to_dict
    from liveml.core.progress import Progress
    from liveml.monitoring.drift import summary
    from liveml.tasks import get_task
    from liveml.training.run import load_trained

    task = get_task(cfg.task.name)
    module, record = load_trained(project.path(cfg.paths.model))
    n = int(cfg.monitor.reference_size)
    held_out = feedback_holdout(task, project.path(cfg.paths.feedback))
    # Units: one per draw, one per input's features, one per input for the model's view.
    with Progress(f"reference {cfg.task.name}", n + 2 * (n + len(held_out))) as progress:
        inputs = draw_inputs(task, cfg, n, stream=REFERENCE_STREAM, progress=progress)
        inputs += [p.read_bytes() for p in held_out]
        profile, timing = profile_inputs(task, module, inputs, progress)
    meta = {
        "task": cfg.task.name,
        "n": len(profile),
        "draws": int(cfg.monitor.reference_size),
        "feedback_inputs": len(held_out),
        "model": {"run_id": record.get("run_id"), "weights_sha256": record.get("weights_sha256")},
        "recipe": to_dict(cfg)["data"],
        "features": {name: summary(v) for name, v in profile.numeric.items()},
        "categorical": {name: _shares(v) for name, v in profile.categorical.items()},
        "embedding_dims": None if profile.embedding is None else int(profile.embedding.shape[1]),
        "timing": timing,
    }
    with atomic_dir(project.path(cfg.paths.reference)) as out:
        profile.save(out / PROFILE)
        atomic_write_json(out / META, meta)
    return meta


def load_reference(ref_dir: Path, model_record: dict | None = None) -> tuple[Profile, dict]:
    """(profile, meta) of a reference folder; it must belong to the model of `model_record`."""
    import json

    ref_dir = Path(ref_dir)
    if not (ref_dir / PROFILE).is_file() or not (ref_dir / META).is_file():
        raise MonitorError(
            f"no reference profile in {ref_dir}; fix: build it with `dvc repro` (stage "
            "<task>_reference runs right after training)."
        )
    meta = json.loads((ref_dir / META).read_text())
    if model_record is not None:
        want = model_record.get("weights_sha256")
        have = (meta.get("model") or {}).get("weights_sha256")
        if want != have:
            raise MonitorError(
                f"the reference in {ref_dir} was made for model weights {str(have)[:12]}, but "
                f"the model is {str(want)[:12]}; fix: `dvc repro` (re-runs <task>_reference)."
            )
    return Profile.load(ref_dir / PROFILE), meta


def _shares(values) -> dict[str, float]:
    import numpy as np

    cats, counts = np.unique(values, return_counts=True)
    return {
        str(c): round(float(k) / max(len(values), 1), 6) for c, k in zip(cats, counts, strict=True)
    }


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """One input the model saw: capture id (or file name), when, where its bytes are."""

    id: str
    timestamp: datetime
    path: Path


def read_inputs(source: Path, task: str) -> list[Observed]:
    """The inputs under `source`, oldest first: a capture root (`captures/`), one task's capture
    folder (`captures/<task>`), or any folder of input files (time = file mtime)."""
    from liveml.serving.capture import iter_captures
    from liveml.tasks import get_task

    source = Path(source)
    if not source.is_dir():
        raise MonitorError(
            f"{source} is not a folder; fix: point --captures at the server's capture folder "
            "(liveml serve --capture-dir) or --inputs at a folder of input files."
        )
    for root in (source, source.parent) if source.name == task else (source,):
        records = list(iter_captures(root, task))
        if records:
            return [
                Observed(r["id"], datetime.fromisoformat(r["timestamp"]), Path(r["input_path"]))
                for r in records
            ]
    suffixes = tuple(f".{s.lower().lstrip('.')}" for s in get_task(task).suffixes)
    files = [p for p in source.rglob("*") if p.suffix.lower() in suffixes and p.is_file()]
    stamped = sorted((os.stat(p).st_mtime_ns, str(p), p) for p in files)
    return [
        Observed(str(p.relative_to(source)), datetime.fromtimestamp(ns / 1e9, UTC), p)
        for ns, _, p in stamped
    ]


# --- monitoring -----------------------------------------------------------------------------


@dataclass
class Monitoring:
    """A monitoring pass: the summary (what `summary.json` holds) and the inputs per window.

    `reports`: where the task's reports are kept (`paths.monitoring`) and how many (`Keep`);
    `write_reports` prunes that folder when it writes a report into it. `storage`: what the
    last `write_reports` measured (sizes, pruned folders)."""

    summary: dict
    windows: list[list[Observed]]
    reports: Keep | None = None
    storage: dict | None = None

    @property
    def drift(self) -> bool:
        return bool(self.summary["drift"])


def monitor(
    cfg: Any,
    project: Any,
    source: Path,
    *,
    window: int | None = None,
    every: str | None = None,
    after: str | None = None,
) -> Monitoring:
    """Compare every full window of inputs under `source` (those after capture id `after`,
    when given) with the reference of the pipeline's current model."""
    import numpy as np

    from liveml.core.progress import Progress
    from liveml.monitoring.drift import compare, parse_every, windows
    from liveml.training.run import load_trained

    m = cfg.monitor
    every = every if every is not None else (None if window else m.every)
    size = None if every else int(window or m.window)
    if size is not None and size < 2:
        raise MonitorError(f"--window {size} is too small; fix: use at least 2 inputs.")
    from liveml.tasks import get_task

    module, record = load_trained(project.path(cfg.paths.model))
    reference, meta = load_reference(project.path(cfg.paths.reference), record)
    items = read_inputs(source, cfg.task.name)
    if after:
        items = [i for i in items if i.id > after]
    spans = windows(
        [i.timestamp for i in items], size=size, every=parse_every(every) if every else None
    )
    used = np.concatenate(spans) if spans else np.array([], dtype=int)
    profile = None
    # Units: one per input's features, one per input for the model's view, and the windows'
    # tests (each weighted by its inputs: the MMD permutations dominate).
    with Progress(f"monitor {cfg.task.name}", 3 * len(used)) as progress:
        if len(used):
            data = [items[i].path.read_bytes() for i in used]
            profile, timing = profile_inputs(get_task(cfg.task.name), module, data, progress)
        reports, groups, offset = [], [], 0
        for index, span in enumerate(spans):
            progress.update(2 * len(used) + offset, f"testing window {index + 1}/{len(spans)}")
            rows = np.arange(offset, offset + len(span))
            offset += len(span)
            group = [items[i] for i in span]
            report = compare(
                reference,
                profile.take(rows),
                alpha=float(m.alpha),
                permutations=int(m.permutations),
                seed=index,
            )
            reports.append(
                {
                    "index": index,
                    "start": group[0].timestamp.isoformat(),
                    "end": group[-1].timestamp.isoformat(),
                    "first": group[0].id,
                    "last": group[-1].id,
                    **report,
                }
            )
            groups.append(group)
        progress.update(3 * len(used), f"tested {len(spans)} window(s) of {len(items)} inputs")
    flags = [w["drift"] for w in reports]
    summary = {
        "task": cfg.task.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(Path(source).absolute()),
        "reference": {
            "path": str(project.path(cfg.paths.reference) / PROFILE),
            "n": meta["n"],
            "model": meta["model"],
            "features": meta["features"],
        },
        "settings": {
            "window": size,
            "every": every,
            "alpha": float(m.alpha),
            "consecutive": int(m.consecutive),
            "permutations": int(m.permutations),
        },
        "inputs": len(items),
        "windows": reports,
        "drift": any(flags),
        "drifted_windows": [i for i, f in enumerate(flags) if f],
        "longest_run": _longest_run(flags),
        "trailing_run": _trailing_run(flags),
        "persistent": _trailing_run(flags) >= int(m.consecutive),
        "timing": timing if profile is not None else None,
        "retrain": None,
    }
    keep = Keep(
        root=project.path(cfg.paths.monitoring),
        count=None if m.keep_reports is None else int(m.keep_reports),
        days=None if m.keep_days is None else float(m.keep_days),
        feedback=project.path(cfg.paths.feedback),
    )
    return Monitoring(summary, groups, keep)


def write_reports(result: Monitoring, out_dir: Path, *, html: bool = True) -> Path:
    """`out_dir/window_<i>.json` per window, `summary.json`, and `report.html`.

    When `out_dir` is a folder of the task's report folder (`result.reports.root`, as
    `liveml monitor` names them), the page loads plotly.js from one shared copy there instead
    of carrying its own (4.8 MB), older reports are pruned (`prune_reports`), and one line on
    stderr says the report's size and the folder's (`result.storage` keeps the numbers)."""
    import sys

    from liveml.core.atomic import atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for report in result.summary["windows"]:
        atomic_write_json(out_dir / f"window_{report['index']:04d}.json", report)
    atomic_write_json(out_dir / SUMMARY, result.summary)
    keep = result.reports
    managed = keep is not None and out_dir.resolve().parent == Path(keep.root).resolve()
    if html:
        from liveml.monitoring.report import shared_plotly, write_html

        src = f"../{shared_plotly(keep.root).name}" if managed else None
        write_html(result.summary, out_dir / REPORT, plotly_src=src)
    if not managed:
        result.storage = {"report": str(out_dir), "report_bytes": folder_bytes(out_dir)}
        return out_dir
    removed = prune_reports(keep, current=out_dir)
    reports = report_folders(keep.root)
    result.storage = {
        "report": str(out_dir),
        "report_bytes": folder_bytes(out_dir),
        "folder": str(keep.root),
        "folder_bytes": folder_bytes(keep.root),
        "reports": len(reports),
        "removed": [str(p) for p in removed],
    }
    print(storage_line(result.storage, keep), file=sys.stderr, flush=True)
    return out_dir


# --- bounded report folder ------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:
    """The report folder of a task and what stays in it: the newest `count` reports, none
    older than `days` (None: no limit); reports under `feedback` versions' provenance stay."""

    root: Path
    count: int | None
    days: float | None
    feedback: Path | None = None


def report_folders(root: Path) -> list[Path]:
    """The report folders under `root` (those holding a summary.json), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / SUMMARY).is_file()]
    return sorted(found, key=lambda p: ((p / SUMMARY).stat().st_mtime, p.name), reverse=True)


def _referenced(feedback: Path | None) -> set[Path]:
    """The report folders feedback versions were made from (their provenance names them)."""
    import json

    if feedback is None or not Path(feedback).is_dir():
        return set()
    from liveml.data.feedback import PROVENANCE, versions

    out = set()
    for version in versions(feedback):
        path = version / PROVENANCE
        try:
            summary = json.loads(path.read_text())["drift_report"]["summary"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.add(Path(summary).resolve().parent)
    return out


def prune_reports(keep: Keep, current: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the report folders of `keep.root` beyond the newest `keep.count` or older than
    `keep.days`; never `current` nor one a feedback version was made from. Returns them."""
    import shutil

    if keep.count is not None and keep.count < 1:
        raise MonitorError(
            f"monitor.keep_reports={keep.count} would remove the report just written; fix: "
            "set it to 1 or more, or null to keep every report."
        )
    if keep.days is not None and not keep.days > 0:
        raise MonitorError(
            f"monitor.keep_days={keep.days} is not a positive number of days; fix: set one "
            "(e.g. 30), or null to keep reports whatever their age."
        )
    now = time.time() if now is None else now
    protected = _referenced(keep.feedback)
    if current is not None:
        protected.add(Path(current).resolve())
    removed = []
    for rank, folder in enumerate(report_folders(keep.root)):
        age_days = (now - (folder / SUMMARY).stat().st_mtime) / 86400
        too_many = keep.count is not None and rank >= keep.count
        too_old = keep.days is not None and age_days > keep.days
        if (too_many or too_old) and folder.resolve() not in protected:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def size_text(n: int) -> str:
    """`4.9 MB`, `312 kB`, `870 B`."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 100 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def storage_line(storage: dict, keep: Keep) -> str:
    """`monitor: report <dir> 180 kB; <root>: 12 reports, 7.0 MB (keeps the newest 100, ...)`."""
    limits = [
        *([f"the newest {keep.count}"] if keep.count is not None else []),
        *([f"none older than {keep.days:g} days"] if keep.days is not None else []),
    ]
    rule = f"keeps {' and '.join(limits)}" if limits else "keeps every report"
    removed = len(storage["removed"])
    gone = f"; removed {removed} old report(s)" if removed else ""
    return (
        f"monitor: report {storage['report']} {size_text(storage['report_bytes'])}; "
        f"{storage['folder']}: {storage['reports']} report(s), "
        f"{size_text(storage['folder_bytes'])} (monitor.keep_reports/keep_days: {rule}){gone}"
    )


def _longest_run(flags: list[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _trailing_run(flags: list[bool]) -> int:
    run = 0
    for flag in reversed(flags):
        if not flag:
            break
        run += 1
    return run
