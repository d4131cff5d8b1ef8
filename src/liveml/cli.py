"""The `liveml` command. Each subcommand is a small `cmd_*` function registered in COMMANDS;
heavy modules are imported inside them so `liveml --help` stays fast.

Conventions every subcommand keeps (docs/cli.md): the exit status is EXIT_OK, EXIT_FINDING or
EXIT_USAGE (EXIT_BUG for a crash); `--json` puts exactly one JSON document on stdout, also when
there is nothing to show or the command failed; a reader that stops early (`| head`) ends the
command quietly; an error is one line on stderr naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK = 0  # done (also when there is nothing to show, e.g. an empty run store)
EXIT_FINDING = 1  # done, and found something: drift, not reproduced, stale params.yaml
EXIT_USAGE = 2  # nothing done: bad arguments, bad config, unknown run, missing model or data
EXIT_BUG = 3  # an unexpected error: the traceback is a bug to report
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
EXIT_PIPE = 141  # stdout closed while writing (128 + SIGPIPE, as `yes | head -1` gives)

EPILOG = """exit status (every command):
  0    done; also when there is nothing to show (an empty run store)
  1    a finding: drift (monitor), not reproduced (reproduce), stale files (params --check)
  2    nothing done: bad arguments or config, unknown run, missing model or data;
       the one-line error on stderr names the fix
  3    an internal error (a bug): the traceback, please report it
  130  interrupted (Ctrl-C)
  141  stdout was closed before the command finished writing (`liveml runs | head -1`);
       when the command had finished, its own status. Either way, no error message.

--json puts one JSON document on stdout, also when there is nothing to show ([]) and on
errors ({"error": MESSAGE, "exit_code": N}). See docs/cli.md.
"""

# name -> (help, add_arguments(parser), run(args) -> exit code). Add a subcommand by
# registering it here with `command(...)`.
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Decorator registering `fn(args) -> int` as `liveml <name>`."""

    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, args, fn)
        return fn

    return register


class UserError(Exception):
    """An error the user fixes (bad config, unknown run): one line on stderr, exit 2."""


def _json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as null: strict JSON (json.dumps writes bare NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    """The one JSON document a `--json` command prints on stdout."""
    print(json.dumps(_json_safe(value), indent=2, allow_nan=False))


def _project():
    from liveml.core.project import Project

    return Project.find()


# --- params -------------------------------------------------------------------------------


def _params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 listing keys where params.yaml differs from conf/",
    )


@command("params", "compose conf/ into params.yaml (the pipeline's parameters)", _params_args)
def cmd_params(args: argparse.Namespace) -> int:
    from liveml.core import pipeline
    from liveml.core.config import stale_keys, write_params

    project = _project()
    if args.check:
        if not project.params_file.is_file():
            print(f"{project.params_file} is missing; fix: run `liveml params`.", file=sys.stderr)
            return EXIT_FINDING
        stale = stale_keys(project)
        if stale:
            print(
                f"params.yaml is stale ({len(stale)} key(s) differ from conf/): "
                f"{', '.join(stale)}; fix: run `liveml params`.",
                file=sys.stderr,
            )
            return EXIT_FINDING
        stale = pipeline.stale(project)
        if stale:
            print(
                f"dvc.yaml is stale (differs from its generation from conf/ and the installed "
                f"tasks: {', '.join(stale)}); fix: run `liveml params`.",
                file=sys.stderr,
            )
            return EXIT_FINDING
        print("params.yaml and dvc.yaml are in sync with conf/")
        return EXIT_OK
    path = write_params(project)
    print(f"wrote {path}")
    return EXIT_OK


def _tasks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the tasks as JSON")


@command("tasks", "list the installed tasks (entry-point group liveml.tasks)", _tasks_args)
def cmd_tasks(args: argparse.Namespace) -> int:
    from liveml.tasks import HOW_TO_REGISTER, installed

    found = {name: ep.value for name, ep in sorted(installed().items())}
    if args.json:
        _print_json([{"name": n, "entry_point": v} for n, v in found.items()])
    elif found:
        width = max(map(len, found))
        for name, value in found.items():
            print(f"{name:<{width}}  {value}")
    else:
        print(f"no task is installed; to add one, {HOW_TO_REGISTER}.", file=sys.stderr)
    return EXIT_OK


# --- init / new-task ------------------------------------------------------------------------


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the project folder to create (new or empty)")
    p.add_argument("--task", required=True, metavar="NAME", help="the first task, e.g. churn")
    p.add_argument(
        "--package", metavar="NAME", help="the Python package (default: DIR's name, my_proj)"
    )


@command("init", "create a project: git + DVC, conf/, a runnable task, tests, Makefile", _init_args)
def cmd_init(args: argparse.Namespace) -> int:
    import os

    from liveml.scaffold import ScaffoldError, init_project

    try:
        root = init_project(args.dir, args.task, args.package)
    except ScaffoldError as e:
        raise UserError(str(e)) from e
    rel = os.path.relpath(root)
    shown = rel if not rel.startswith("..") else str(root)
    print(
        f"created {root} with task {args.task!r}; git and DVC are initialized.\n"
        "Next:\n"
        f"  cd {shown}\n"
        "  make repro    # .venv with the project and liveml, params.yaml + dvc.yaml, dvc repro\n"
        "  make test     # the task's tests\n"
        "  git add -A && git commit -m 'liveml project'"
    )
    return EXIT_OK


def _new_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the task's name (lowercase, digits, _)")
    p.add_argument(
        "--package", metavar="MODULE", help="the module it goes under (default: the project's)"
    )


@command(
    "new-task", "add a task to this project: its package, conf/ files, entry point", _new_task_args
)
def cmd_new_task(args: argparse.Namespace) -> int:
    from liveml.scaffold import ScaffoldError, new_task

    try:
        written = new_task(args.name, package=args.package)
    except ScaffoldError as e:
        raise UserError(str(e)) from e
    for path in written:
        print(f"wrote {path}")
    print(
        "added it to pyproject.toml (entry point) and conf/pipeline.yaml.\n"
        "Entry points come from the installed metadata: reinstall the project (`make`, or "
        "`pip install -e .`), then `make repro` trains it."
    )
    return EXIT_OK


# --- runs / lineage -----------------------------------------------------------------------


def _store():
    from liveml.core.project import Project
    from liveml.tracking.runs import RunStore

    try:
        project = Project.find()
    except FileNotFoundError:
        # Outside a project, paths to a model folder or run.json still work.
        return RunStore("runs")
    return RunStore.for_project(project)


def _lineage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="PATH_OR_RUN", help="model folder, run.json, run id or prefix")
    p.add_argument("--json", action="store_true", help="print the whole run record as JSON")


@command("lineage", "show what a model was made from: code, config, data, env", _lineage_args)
def cmd_lineage(args: argparse.Namespace) -> int:
    store = _store()
    record = store.get(args.ref)
    if args.json:
        _print_json(record)
    else:
        print(summarize(record, trigger=_retrain_of(store, record.get("run_id"))))
    return EXIT_OK


def _retrain_of(store, run_id: str | None) -> dict | None:
    """The `retrain` record whose challenger is run `run_id`: the drift that caused the model."""
    if run_id is None or not store.path.is_dir():
        return None
    from liveml.tracking.runs import BadRecordError

    for rid in reversed(store.ids()):
        if "-retrain-" in rid:
            try:
                found = store.get(rid).get("retrain") or {}
            except BadRecordError:
                continue  # a broken retrain record cannot be the trigger; `liveml runs` names it
            if isinstance(found, dict) and (found.get("challenger") or {}).get("run_id") == run_id:
                return {**found, "run_id": rid}
    return None


def summarize(record: dict, trigger: dict | None = None) -> str:
    """A human-readable summary of a run record (and of the drift that led to it, if any)."""
    code = record.get("code") or {}
    env = record.get("environment") or {}
    wandb = record.get("wandb") or {}
    commit = code.get("commit") or "not in git"
    diff = str(code.get("diff_sha256"))[:12]
    dirty = f" + uncommitted changes {diff}" if code.get("dirty") else ""
    lines = [
        f"run          {record.get('run_id')}  ({record.get('task')}, {record.get('created')})",
        f"fingerprint  {record.get('fingerprint')}",
        f"code         {commit}{dirty}",
        f"seed         {record.get('seed')}",
    ]
    for path, h in (record.get("data") or {}).items():
        lines.append(f"data         {path}  {h}")
    lines.append(
        "environment  "
        + ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "lightning") if env.get(k))
    )
    if record.get("resumed_from"):
        r = record["resumed_from"]
        done, step = r.get("epochs_done"), r.get("global_step")
        lines.append(f"resumed      after epoch {done} (step {step})")
    for k, v in (record.get("metrics") or {}).items():
        shown = f"{v:.6g}" if isinstance(v, float) else v
        lines.append(f"metric       {k} = {shown}")
    lines.append(f"weights      sha256 {record.get('weights_sha256')}")
    if trigger:
        report = trigger["drift_report"]
        lines += [
            f"retrained    after drift in {', '.join(report['drifted'])} (windows "
            f"{report['windows']}, report {report['summary']})",
            f"feedback     {trigger['feedback_version']} ({trigger['feedback_counts']['train']} "
            f"labelled inputs for training); {trigger['decision']}: {trigger['reason']}",
            f"             retrain record {trigger['run_id']}, experiment {trigger['experiment']}",
        ]
    if wandb.get("id"):
        lines.append(f"wandb        {wandb.get('id')} ({wandb.get('mode')}) {wandb.get('dir')}")
    return "\n".join(lines)


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=("list", "export", "import"),
        default="list",
        help="list (the default): the runs of the store; export PATH: write runs to a bundle "
        "(a folder, or FILE.tar.gz); import PATH: bring in the runs of a bundle, of another "
        "run store folder (e.g. rsynced from a cluster), of a project or of a run folder",
    )
    p.add_argument("path", nargs="?", metavar="PATH", help="export/import: the bundle or source")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        dest="select",
        metavar="RUN",
        help="export/import: only this run (id or prefix); repeat the flag for more",
    )
    p.add_argument(
        "--wandb",
        action="append",
        default=[],
        metavar="DIR",
        help="export/import: also look for the runs' W&B folders in DIR (repeatable)",
    )
    p.add_argument(
        "--skip-conflicts",
        action="store_true",
        help="export/import: when runs conflict (same id, different record), move the others "
        "and list the conflicts (exit 1) instead of refusing all",
    )
    p.add_argument(
        "--json", action="store_true", help="print the run records (or what moved) as JSON"
    )


def _no_runs_yet(store) -> None:
    """Say on stderr (stdout holds the, empty, answer) that the store is empty and how to fill
    it; an empty store is not an error (exit 0), whichever command reads it."""
    print(
        f"no runs in {store.path} yet; train one with `make repro` (or `dvc repro`, or "
        "`python -m liveml.training`), or run liveml in (or set LIVEML_ROOT to) the project "
        "that has them.",
        file=sys.stderr,
    )


def _store_is_empty(store) -> bool:
    """No run folder in the store (stops at the first: cheap for a store of 100,000 runs)."""
    from liveml.tracking.runs import RECORD

    if not store.path.is_dir():
        return True
    with os.scandir(store.path) as entries:
        return not any(
            not e.name.startswith(".") and os.path.isfile(os.path.join(e.path, RECORD))
            for e in entries
        )


@command("runs", "list the runs in the local run store; export or import runs", _runs_args)
def cmd_runs(args: argparse.Namespace) -> int:
    if args.action != "list":
        return _runs_transfer(args)
    if args.path or args.select or args.wandb or args.skip_conflicts:
        raise UserError(
            "PATH, --run, --wandb and --skip-conflicts go with `liveml runs export` or "
            "`liveml runs import`; fix: add the action, e.g. `liveml runs import PATH`"
        )
    store = _store()
    records = store.list()
    if args.json:
        _print_json(records)
    else:
        for r in records:
            val = {k: v for k, v in (r.get("metrics") or {}).items() if k.startswith("val")}
            metrics = " ".join(f"{k}={v:.4g}" for k, v in val.items())
            print(f"{r['run_id']}  {r.get('fingerprint', '')[:12]}  {metrics}")
    if not records:
        _no_runs_yet(store)
    return EXIT_OK


def _runs_transfer(args: argparse.Namespace) -> int:
    """`liveml runs export PATH` / `liveml runs import PATH` (liveml.tracking.transfer)."""
    from liveml.tracking import transfer

    if not args.path:
        example = "~/runs.tar.gz" if args.action == "export" else "cluster/runs"
        raise UserError(
            f"`liveml runs {args.action}` needs a PATH; fix: `liveml runs {args.action} {example}`"
        )
    store = _store()
    move = transfer.export_store if args.action == "export" else transfer.import_store
    try:
        result = move(
            store,
            args.path,
            runs=args.select or None,
            skip_conflicts=args.skip_conflicts,
            wandb_dirs=args.wandb,
        )
    except transfer.TransferError as e:  # also ImportConflictError: nothing was written
        raise UserError(str(e)) from e
    for warning in result.warnings:
        print(f"liveml: warning: {warning}", file=sys.stderr)
    for conflict in result.conflicts:
        print(f"liveml: conflict (left out): {conflict}", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.summary())
    return EXIT_FINDING if result.conflicts else EXIT_OK


# --- reproduce ----------------------------------------------------------------------------


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="RUN", help="run id, prefix, model folder or run.json")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


@command("reproduce", "retrain a run; exit 0 iff weights and metrics match", _reproduce_args)
def cmd_reproduce(args: argparse.Namespace) -> int:
    from liveml.tracking.reproduce import reproduce

    # Training output (progress bar, summaries) goes to stderr: stdout is the report.
    with contextlib.redirect_stdout(sys.stderr):
        report = reproduce(args.ref, _project())
    ok = report["weights_match"] and report["metrics_match"]
    if args.json:
        _print_json(report)
    else:
        o, r = report["original"], report["reproduced"]
        print(f"run {report['run_id']}: {'REPRODUCED' if ok else 'NOT reproduced'}")
        print(f"  weights  {o['weights_sha256']}  vs  {r['weights_sha256']}")
        for k, (a, b) in report["metric_diffs"].items():
            print(f"  metric   {k}: {a} vs {b}")
        for w in report["warnings"]:
            print(f"  warning  {w}")
    return EXIT_OK if ok else EXIT_FINDING


# --- compare ------------------------------------------------------------------------------


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids or prefixes (default: all)")
    p.add_argument("--sweep", metavar="NAME", help="runs of this sweep (name or prefix), or `last`")
    p.add_argument("--task", help="runs of this task")
    p.add_argument("--status", help="runs with this status (finished, pruned)")
    p.add_argument("--sort", metavar="KEY", help="sort by a column: a param or metric key")
    p.add_argument("--desc", action="store_true", help="sort descending (missing values stay last)")
    p.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="GLOB",
        help="show only the metrics matching GLOB, e.g. 'val/*'; repeat the flag (or separate "
        "globs with commas) for more: --metrics 'val/*' --metrics 'train/loss'",
    )
    p.add_argument("--limit", type=int, metavar="N", help="show the first N runs after sorting")
    p.add_argument("--json", action="store_true", help="print the rows (or the diff) as JSON")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report")
    p.add_argument(
        "--diff",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="show what changed between two runs (code, hyperparameters, data)",
    )


GLOB_CHARS = "*?["


def _resolve_runs(store, refs: list[str], globs: list[str]) -> None:
    """Fail early on a RUN that names no run, saying so when it looks like a metric glob (run
    ids never hold * ? [): `--metrics 'val/*' 'train/*'` gives the second glob as a RUN."""
    from liveml.tracking.runs import RunNotFoundError

    for ref in refs:
        try:
            store.resolve(ref)
        except RunNotFoundError as e:
            if any(c in ref for c in GLOB_CHARS) and "ambiguous" not in str(e):
                flags = " ".join(f"--metrics {g!r}" for g in [*globs, ref])
                raise UserError(
                    f"no run matches {ref!r}, which looks like a metric glob; fix: give each "
                    f"glob its own flag ({flags}) or join them with commas "
                    f"(--metrics {','.join([*globs, ref])!r})"
                ) from e
            raise


@command("compare", "compare runs: varied params, metrics, diffs; HTML report", _compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    from liveml.tracking import compare

    store = _store()
    try:
        repo = _project().root
    except FileNotFoundError:
        repo = None
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit}); fix: --limit 1 or more")
    metrics = [g.strip() for flag in args.metrics for g in flag.split(",") if g.strip()]
    _resolve_runs(store, [*args.runs, *(args.diff or ())], metrics)
    try:
        if args.diff:
            a, b = (compare.load_run(store, ref) for ref in args.diff)
            diff = compare.diff_runs(a, b, repo=repo)
            if args.json:
                _print_json(diff)
            else:
                print(compare.format_diff(diff))
            return EXIT_OK
        if not args.runs and _store_is_empty(store):
            if args.json:
                _print_json([])
            _no_runs_yet(store)
            if args.html:
                print(f"no report written to {args.html}: no runs to compare", file=sys.stderr)
            return EXIT_OK
        runs = compare.load_runs(store, args.runs)
        runs = compare.select(runs, sweep=args.sweep, task=args.task, status=args.status)
        table = compare.build_table(runs, metrics=metrics)
        if args.sort or args.desc:
            table = compare.sort_table(table, args.sort or "run", desc=args.desc)
        if args.limit:
            table = table.head(args.limit)
        text = compare.table_json(table) if args.json else compare.format_table(table)
    except compare.CompareError as e:
        raise UserError(str(e)) from e
    if args.html:  # before stdout's answer: a failure leaves no half answer there
        from liveml.tracking.compare_report import write_report

        write_report(args.html, table, repo=repo)
        print(f"wrote {args.html}", file=sys.stderr)
    print(text)
    return EXIT_OK


# --- explain ------------------------------------------------------------------------------


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="A and B: run ids, prefixes, model folders, run.json paths or DVC experiment "
        "names; or one `retrain` record (its champion and challenger)",
    )
    p.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="NAME",
        help="also explain this metric (repeatable, or comma-separated); default: the task's "
        "headline metric",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells and the estimated time; train nothing",
    )
    p.add_argument(
        "--verify-originals",
        action="store_true",
        help="also retrain A and B from their re-created parts and compare their weights",
    )
    p.add_argument(
        "--jobs", type=int, metavar="N", help="cells trained at once (the joblib launcher's n_jobs)"
    )


@command(
    "explain",
    "which of code, hyperparameters and data moved a metric from run A to run B",
    _explain_args,
)
def cmd_explain(args: argparse.Namespace) -> int:
    from liveml.tracking.explain import ExplainError, explain, format_report
    from liveml.tracking.recreate import RecreateError

    if len(args.runs) > 2:
        raise UserError(f"give two runs, or one retrain record (got {len(args.runs)} runs)")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {args.jobs})")
    metrics = [m.strip() for flag in args.metrics for m in flag.split(",") if m.strip()]
    project = _project()
    try:
        # Training output (progress bars, summaries) goes to stderr: stdout is the report.
        with contextlib.redirect_stdout(sys.stderr):
            report = explain(
                args.runs,
                project,
                metrics=metrics,
                dry_run=args.dry_run,
                verify_originals=args.verify_originals,
                jobs=args.jobs,
            )
    except (ExplainError, RecreateError) as e:
        raise UserError(str(e)) from e
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    if report.get("dry_run"):
        return EXIT_OK
    return EXIT_OK if report["originals"]["reproduced"] else EXIT_FINDING


# --- serve --------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    from liveml.serving.config import PUBLIC_ENDPOINTS, ServeConfig

    d = ServeConfig.__dataclass_fields__
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="serve the export folder DIR for TASK (repeatable); default: every task's "
        "pipeline export (tasks.<task>.paths.export in params.yaml)",
    )
    p.add_argument("--runtime", choices=("torch", "onnx"), default=d["runtime"].default)
    p.add_argument("--host", default=d["host"].default, help="0.0.0.0 to listen on all interfaces")
    p.add_argument("--port", type=int, default=d["port"].default)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with the models")
    p.add_argument("--max-batch", type=int, default=d["max_batch"].default)
    p.add_argument("--max-wait-ms", type=float, default=d["max_wait_ms"].default)
    p.add_argument("--queue-size", type=int, default=d["queue_size"].default)
    p.add_argument("--max-body-mb", type=float, default=d["max_body_bytes"].default / 2**20)
    p.add_argument("--capture-dir", default=d["capture_dir"].default)
    p.add_argument(
        "--capture-sample",
        type=float,
        default=d["capture_sample"].default,
        help="fraction of inputs captured for drift monitoring (0 = off)",
    )
    p.add_argument("--capture-max-mb", type=float, default=d["capture_max_bytes"].default / 2**20)
    p.add_argument(
        "--reload-every",
        type=float,
        default=d["reload_s"].default,
        metavar="SECONDS",
        help="hot reload: check the export folders this often and swap in a changed model "
        "(a promoted challenger) without a restart; 0 = off",
    )
    # Limits (docs/serving.md); unset flags keep the LIVEML_SERVE_<NAME> variable or default.
    limits = p.add_argument_group("limits (default: $LIVEML_SERVE_<NAME>, else docs/serving.md)")
    for flag, kind, meta, text in SERVE_LIMITS:
        limits.add_argument(flag, type=kind, default=None, metavar=meta, help=text)
    p.add_argument(
        "--public",
        action="append",
        default=None,
        choices=PUBLIC_ENDPOINTS,
        help="with a token set, leave this endpoint open (repeatable): metrics = /metrics, "
        "docs = /docs and /openapi.json",
    )


# `liveml serve` limit flags: (flag, type, metavar, help); the ServeConfig field is named by
# SERVE_LIMIT_FIELDS (a size flag in KB/MB becomes bytes).
SERVE_LIMITS = (
    ("--decode-threads", int, "N", "threads decoding uploads off the event loop"),
    ("--header-timeout", float, "SECONDS", "a request's headers must arrive within this"),
    ("--body-timeout", float, "SECONDS", "a request's body must arrive within this"),
    ("--keepalive", float, "SECONDS", "idle keep-alive connections close after this"),
    ("--max-header-kb", float, "KB", "largest request header block (431 above it)"),
    ("--max-connections", int, "N", "open connections (503 above it)"),
    ("--max-inflight-mb", float, "MB", "request bytes being received at once (503 above it)"),
)
SERVE_LIMIT_FIELDS = {
    "decode_threads": ("decode_threads", 1),
    "header_timeout": ("header_timeout_s", 1),
    "body_timeout": ("body_timeout_s", 1),
    "keepalive": ("keepalive_s", 1),
    "max_header_kb": ("max_header_bytes", 2**10),
    "max_connections": ("max_connections", 1),
    "max_inflight_mb": ("max_inflight_bytes", 2**20),
}


def _serve_limits(args: argparse.Namespace) -> dict:
    """ServeConfig keyword arguments of the limit flags given (bytes for the size flags)."""
    out = {}
    for dest, (name, scale) in SERVE_LIMIT_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            out[name] = value if scale == 1 else int(value * scale)
    if args.public is not None:
        out["public_endpoints"] = tuple(dict.fromkeys(args.public))
    return out


@command("serve", "serve the exported models over HTTP (token: $LIVEML_API_TOKEN)", _serve_args)
def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from liveml.serving.config import TOKEN_ENV, ServeConfig
    from liveml.serving.server import run_server

    try:
        cfg = ServeConfig(
            models=_served_models(args.model),
            runtime=args.runtime,
            host=args.host,
            port=args.port,
            workers=args.workers,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            queue_size=args.queue_size,
            max_body_bytes=int(args.max_body_mb * 2**20),
            token=os.environ.get(TOKEN_ENV) or None,
            capture_dir=args.capture_dir or None,
            capture_sample=args.capture_sample,
            capture_max_bytes=int(args.capture_max_mb * 2**20),
            reload_s=args.reload_every,
            **_serve_limits(args),
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    return run_server(cfg)


def _served_models(given: list[str]) -> dict[str, str]:
    """TASK=DIR pairs, or every pipeline task whose export folder exists."""
    if given:
        pairs = [g.partition("=") for g in given]
        bad = [g for g, (t, eq, d) in zip(given, pairs, strict=True) if not (t and eq and d)]
        if bad:
            raise UserError(
                f"--model {bad[0]!r} is not TASK=DIR; e.g. --model mytask=data/mytask/export"
            )
        return {t: d for t, _, d in pairs}
    import yaml

    project = _project()
    params = yaml.safe_load(project.params_file.read_text()) if project.params_file.exists() else {}
    exports = {t: c["paths"]["export"] for t, c in (params or {}).get("tasks", {}).items()}
    found = {t: str(project.path(p)) for t, p in exports.items() if project.path(p).is_dir()}
    if not found:
        raise UserError(
            f"no exported model in {', '.join(exports.values()) or 'params.yaml'}; fix: run "
            "`make repro` (or `dvc repro`) first, or pass --model TASK=EXPORT_DIR"
        )
    return found


# --- monitor --------------------------------------------------------------------------------


def _monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="the task whose served model's inputs to check")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--captures", help="the server's capture folder (default: captures)")
    src.add_argument("--inputs", help="any folder of input files (time order: file mtime)")
    p.add_argument("--window", type=int, help="inputs per window (default: monitor.window)")
    p.add_argument("--every", help="windows by capture time instead, e.g. 1h, 30m, 1d")
    p.add_argument("--alpha", type=float, help="per-window false-alarm rate (monitor.alpha)")
    p.add_argument("--out", help="report folder (default: <paths.monitoring>/<UTC time>)")
    p.add_argument("--no-html", action="store_true", help="JSON reports only")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="after K drifted windows in a row: label, add a data version, retrain, compare, "
        "promote (needs git + DVC and --labels)",
    )
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="DIR",
        help="ground truth: a dataset folder made by the task's generator (repeatable)",
    )
    p.add_argument("--consecutive", type=int, help="K for --retrain (monitor.consecutive)")
    p.add_argument("--margin", type=float, help="allowed loss on the original test set")


@command(
    "monitor",
    "check the served model's inputs for drift (exit 1: drift); --retrain closes the loop",
    _monitor_args,
)
def cmd_monitor(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from liveml.core.config import load_params
    from liveml.monitoring.monitor import MonitorError, monitor, write_reports

    project = _project()
    cfg = load_params(args.task, project)
    for key in ("alpha", "consecutive", "margin"):
        if getattr(args, key) is not None:
            cfg.monitor[key] = getattr(args, key)
    if args.retrain and not args.labels:
        raise UserError(
            "--retrain needs --labels DIR (where the inputs' ground truth is); fix: add "
            "--labels DIR, a dataset folder made by the task's generator"
        )
    _require_model(project, args.task, project.path(cfg.paths.model))
    source = Path(args.inputs or args.captures or project.path("captures"))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else project.path(cfg.paths.monitoring) / stamp
    after = None
    if args.retrain:
        from liveml.monitoring.retrain import last_consumed

        after = last_consumed(project.path(cfg.paths.feedback))
    try:
        result = monitor(cfg, project, source, window=args.window, every=args.every, after=after)
        s = result.summary
        if args.retrain:
            write_reports(result, out, html=False)  # the version's provenance points at it
            if s["persistent"]:
                from liveml.monitoring.retrain import retrain

                s["retrain"] = retrain(cfg, project, result, [Path(p) for p in args.labels], out)
            else:
                s["retrain"] = {
                    "decision": "skipped",
                    "reason": f"{s['trailing_run']} drifted window(s) in a row at the end, "
                    f"fewer than monitor.consecutive={cfg.monitor.consecutive}",
                }
        write_reports(result, out, html=not args.no_html)
    except MonitorError as e:
        raise UserError(str(e)) from e
    except FileNotFoundError as e:  # a pipeline output the monitor reads (model, reference)
        raise UserError(
            f"{e.filename or e} is missing: task {args.task!r} has no complete trained model. "
            "Fix: run `make repro` (or `dvc repro`) first; it trains, exports and profiles it."
        ) from e
    for w in s["windows"]:
        verdict = "DRIFT " + ", ".join(w["drifted"]) if w["drift"] else "ok"
        print(f"window {w['index']:>3}  {w['n']:>5} inputs  {w['start'][:19]}  {verdict}")
    if not s["windows"]:
        print(f"no full window yet ({s['inputs']} inputs under {source})")
    if s["retrain"]:
        print(f"retrain: {s['retrain']['decision']}: {s['retrain']['reason']}")
    print(f"reports: {out}")
    return EXIT_FINDING if s["drift"] else EXIT_OK


def _require_model(project, task: str, model_dir) -> None:
    """Before loading torch (seconds): the pipeline's model of `task` must exist."""
    from liveml.tracking.runs import RECORD

    if not (model_dir / RECORD).is_file():
        shown = os.path.relpath(model_dir, project.root)
        raise UserError(
            f"no trained model for task {task!r}: {shown}/{RECORD} is missing. Fix: run "
            "`make repro` (or `dvc repro`) first; it trains the model and builds the reference "
            "the monitor compares with."
        )


# --- entry --------------------------------------------------------------------------------


class _Version(argparse.Action):
    """`--version`: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("liveml")
        except PackageNotFoundError:
            found = "unknown (not installed: `pip install -e .` in the liveml repo)"
        print(f"liveml {found}")  # on stdout, as argparse's own version action
        parser.exit()


# Commands whose positional RUNs may also follow options (`compare --metrics 'val/*' RUN`).
INTERMIXED = {"compare": "runs"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveml",
        description="Experiment tracking and reproducibility: code + hyperparameters + data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print liveml's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, fn) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog="exit status: 0 done, 1 a finding, 2 nothing done (the error names the "
            "fix); see `liveml --help`.",
        )
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, plus RUNs given after an option (`compare --metrics 'val/*' RUN A`), which
    plain argparse reports as unrecognized once the RUN list was read before the option."""
    args, extra = parser.parse_known_args(argv)
    dest = INTERMIXED.get(args.command)
    if extra and dest and not any(e.startswith("-") for e in extra):
        getattr(args, dest).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors with a message written for the user (imported only once a command failed)."""
    from liveml.core.config import ConfigError
    from liveml.tracking.runs import RunNotFoundError

    errors: list[type] = [ConfigError, RunNotFoundError, FileNotFoundError, UserError]
    if "liveml.serving.runtime" in sys.modules:
        errors.append(sys.modules["liveml.serving.runtime"].ModelLoadError)
    if "liveml.tracking.reproduce" in sys.modules:
        errors.append(sys.modules["liveml.tracking.reproduce"].DataMismatchError)
    if "liveml.training.run" in sys.modules:
        errors.append(sys.modules["liveml.training.run"].ResumeError)
    return tuple(errors)


def _message(e: BaseException) -> str:
    """A user error's message, with the fix where the raiser could not know it."""
    from liveml.tracking.runs import BadRecordError

    if isinstance(e, BadRecordError) and e.problem is not None:
        return (
            f"{e}; fix: repair that file, or move its run folder out of the run store "
            "(the other runs are not affected)"
        )
    if isinstance(e, FileNotFoundError) and e.filename:
        return (
            f"{e.filename} does not exist; fix: check the path (pipeline outputs such as models "
            "and exports are made by `make repro`, or `dvc repro`)"
        )
    return str(e)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """Report a failed command: the line on stderr, and with --json the error as JSON on stdout
    (so stdout still holds one JSON document)."""
    print(f"liveml {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"error": message, "exit_code": code})
    return code


def _run(args: argparse.Namespace) -> int:
    """The command, its errors turned into an exit status (see EPILOG)."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"liveml {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as e:
        if isinstance(e, _user_errors()):
            return _fail(args, _message(e), EXIT_USAGE)
        import traceback

        traceback.print_exc()
        return _fail(
            args,
            f"internal error {type(e).__name__}: {e} (a bug in liveml: please report it with "
            "the traceback above and the command line)",
            EXIT_BUG,
        )


def _quiet_stdout() -> None:
    """After the reader of stdout went away: point stdout (and stderr, often the same pipe) at
    /dev/null, so the interpreter's final flush does not fail again (Python docs, "Note on
    SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    code = None
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
        return code
    except BrokenPipeError:  # `liveml runs | head -1`: the reader has what it wanted
        _quiet_stdout()
        return EXIT_PIPE if code is None else code


if __name__ == "__main__":
    sys.exit(main())
