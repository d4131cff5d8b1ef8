"""Automated retraining after persistent drift: the drifted inputs are labelled and added as a
new feedback data version, the pipeline runs as a DVC experiment, and the challenger replaces
the champion only if it is better on the drifted data without losing more than
`monitor.margin` on the original test set.

Every step leaves a trace: the feedback version's `provenance.json` (which drift report, which
captures, which labels), git commits (the version's `.dvc` file, then the promotion), the
experiment's own training run record, and a `retrain` run record that ties them together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liveml.monitoring.monitor import SUMMARY, MonitorError, Monitoring, Observed

# Commits made on the user's behalf need an identity; the user's own git config wins.
_IDENTITY = {"name": "liveml monitor", "email": "liveml@localhost"}


def decide(champion: dict, challenger: dict, margin: float) -> tuple[bool, str]:
    """(promote?, why): better on the drifted data, at most `margin` worse on the original.

    `champion`/`challenger` are {"original": score, "drifted": score}, each score
    {"metric", "value", "higher_is_better"}.
    """
    metric = challenger["drifted"]["metric"]
    for role, scores in (("champion", champion), ("challenger", challenger)):
        for data, score in scores.items():
            if score["value"] is None:  # e.g. mAP of a split without any defect
                return False, f"no {metric} of the {role} on the {data} data: nothing to compare"
    sign = 1.0 if challenger["drifted"]["higher_is_better"] else -1.0
    gain = sign * (challenger["drifted"]["value"] - champion["drifted"]["value"])
    loss = sign * (champion["original"]["value"] - challenger["original"]["value"])
    facts = (
        f"{metric} on the drifted data {champion['drifted']['value']:.4f} -> "
        f"{challenger['drifted']['value']:.4f}, on the original test set "
        f"{champion['original']['value']:.4f} -> {challenger['original']['value']:.4f}"
    )
    if gain <= 0:
        return False, f"not better on the drifted data ({facts})"
    if loss > margin:
        return False, f"loses {loss:.4f} > margin {margin} on the original test set ({facts})"
    return True, f"better on the drifted data, within the margin on the original ({facts})"


def drifted_inputs(result: Monitoring) -> list[Observed]:
    """The inputs of the trailing run of drifted windows (the episode that triggered)."""
    run = result.summary["trailing_run"]
    return [o for group in result.windows[len(result.windows) - run :] for o in group]


def last_consumed(feedback_dir: Path) -> str | None:
    """The newest capture id any feedback version was made from: later passes start after it,
    so one drift episode triggers one retraining."""
    import json

    from liveml.data.feedback import PROVENANCE, versions

    last = None
    for version in versions(feedback_dir):
        path = version / PROVENANCE
        if path.is_file():
            last = max(last or "", json.loads(path.read_text())["drift_report"]["last"])
    return last


def retrain(cfg: Any, project: Any, result: Monitoring, labels: list[Path], report_dir: Path):
    """Run the loop for a persistent drift in `result`; returns the `retrain` summary dict
    (also saved as a run record)."""
    from liveml.data.feedback import score, write_version
    from liveml.tasks import get_task
    from liveml.tracking.runs import RunStore
    from liveml.training.run import load_trained

    task, m = cfg.task.name, cfg.monitor
    contract = get_task(task)
    inputs = drifted_inputs(result)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    version = f"{stamp}-drift"
    version_dir = project.path(cfg.paths.feedback) / version
    truth = contract.ground_truth([Path(p) for p in labels])
    drifted_features = sorted(
        {
            f
            for w in result.summary["windows"][-result.summary["trailing_run"] :]
            for f in w["drifted"]
        }
    )
    provenance = {
        "version": version,
        "task": task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "drift_report": {
            "summary": str(report_dir / SUMMARY),
            "windows": result.summary["drifted_windows"][-result.summary["trailing_run"] :],
            "drifted": drifted_features,
            "first": inputs[0].id,
            "last": inputs[-1].id,
        },
        "captures": [o.id for o in inputs],
        "labels": [str(Path(p).absolute()) for p in labels],
    }
    counts = write_version(
        contract,
        [o.path for o in inputs],
        truth,
        version_dir,
        holdout=m.holdout,
        provenance=provenance,
    )
    repo = Repo(project.root)
    rel = version_dir.relative_to(project.root)
    repo.dvc("add", str(rel))
    repo.git("add", f"{rel}.dvc", str(rel.parent / ".gitignore"))
    repo.git(
        "commit",
        "-q",
        "-m",
        f"feedback {task}/{version}: {counts['train']} labelled "
        f"drifted inputs for training, {counts['test']} held out ({', '.join(drifted_features)})",
    )
    experiment = f"retrain-{task}-{stamp}"
    repo.dvc("exp", "run", "--temp", "-n", experiment, f"{task}_export", f"{task}_reference")
    rev = repo.experiment_rev(experiment)

    champion_module, champion_record = load_trained(project.path(cfg.paths.model))
    with tempfile.TemporaryDirectory(prefix="challenger-") as tmp:
        challenger_dir = repo.fetch(rev, cfg.paths.model, Path(tmp) / "model")
        challenger_module, challenger_record = load_trained(challenger_dir)
        original = project.path(cfg.paths.data)
        scores = {
            role: {
                "original": score(contract, cfg, module, original, "test"),
                "drifted": score(contract, cfg, module, version_dir, "test"),
            }
            for role, module in (("champion", champion_module), ("challenger", challenger_module))
        }
    promote, reason = decide(scores["champion"], scores["challenger"], float(m.margin))
    if promote:
        repo.dvc("exp", "apply", experiment)
        repo.git("add", "-u")
        repo.git("commit", "-q", "-m", f"promote {experiment}: {reason}")
    outcome = {
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "experiment": experiment,
        "experiment_rev": rev,
        "feedback_version": version,
        "feedback_counts": counts,
        "drift_report": provenance["drift_report"],
        "champion": _model_facts(champion_record, scores["champion"]),
        "challenger": _model_facts(challenger_record, scores["challenger"]),
        "commit": repo.head(),
    }
    record = {
        "run_id": f"{stamp}-retrain-{task}",
        "kind": "retrain",
        "task": task,
        "created": provenance["created"],
        "config": {"monitor": dict(m)},
        "retrain": outcome,
    }
    store = RunStore.for_project(project, cfg)
    outcome["run_id"] = store.save(record, files={SUMMARY: report_dir / SUMMARY}).name
    return outcome


def _model_facts(record: dict, scores: dict) -> dict:
    return {
        "run_id": record.get("run_id"),
        "weights_sha256": record.get("weights_sha256"),
        "original": scores["original"],
        "drifted": scores["drifted"],
    }


class Repo:
    """git and dvc in the project, with the venv's tools on PATH (DVC stages call `python`)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        for key, value in _IDENTITY.items():
            if not self._run(["git", "config", f"user.{key}"], check=False).stdout.strip():
                self.env[f"GIT_AUTHOR_{key.upper()}"] = value
                self.env[f"GIT_COMMITTER_{key.upper()}"] = value

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            cmd, cwd=self.root, env=getattr(self, "env", None), capture_output=True, text=True
        )
        if check and out.returncode != 0:
            raise MonitorError(
                f"`{' '.join(cmd)}` failed ({out.returncode}) in {self.root}:\n"
                f"{out.stdout[-2000:]}{out.stderr[-4000:]}"
            )
        return out

    def git(self, *args: str) -> str:
        return self._run(["git", *args]).stdout

    def dvc(self, *args: str) -> str:
        return self._run([shutil.which("dvc", path=self.env["PATH"]) or "dvc", *args]).stdout

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def experiment_rev(self, name: str) -> str:
        """The commit of DVC experiment `name` (its ref is refs/exps/../<name>)."""
        refs = self.git("for-each-ref", "refs/exps", "--format=%(refname) %(objectname)")
        for line in refs.splitlines():
            ref, _, sha = line.partition(" ")
            if ref.rsplit("/", 1)[-1] == name:
                return sha
        raise MonitorError(f"DVC experiment {name!r} left no ref; `dvc exp show` tells why")

    def fetch(self, rev: str, path: str, dest: Path) -> Path:
        """A DVC- or git-tracked folder as of `rev`, copied to `dest` (from the local cache)."""
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(self.root), rev=rev)
        fs.get(path.rstrip("/"), str(dest), recursive=True)
        return dest
