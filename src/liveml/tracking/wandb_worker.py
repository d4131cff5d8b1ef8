"""The W&B side of a training run, in a process of its own (`loggers.BackgroundWandb` starts it).

W&B's Python SDK costs a second or more of CPU (its import, the run's start, serialising each
log call) and holds the interpreter lock while it works; in the training process that time is
taken from the training loop, even in a background thread. Here it runs beside the training, at
a lower scheduling priority. The training sends one JSON line per call on stdin; this process
starts the run (what Lightning's WandbLogger does: `wandb.init`, then the `trainer/global_step`
x-axis), applies the calls in order, and answers on stdout: one line when the run has started
(its id and folder) or failed to, one when it has finished. If the training process dies (stdin
closes without a finish), the run is finished as failed (exit code 1).

Imports only W&B and the standard library (not torch or Lightning): it starts in a moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

NICE = 10


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def start(init: dict, id_file: str, resumed_id: str | None, new_id: str):
    """Start the W&B run (`init`: wandb.init's arguments without `id`): the resumed id first;
    a resumed id still held open by a killed process's service falls back to a new run."""
    if resumed_id:
        try:
            return start_one(init, id_file, resumed_id)
        except Exception as e:
            if "in use" not in str(e):
                raise
            print(
                f"liveml: W&B run {resumed_id} is still held open ({e}); logging the resumed "
                "training to a new W&B run",
                file=sys.stderr,
                flush=True,
            )
    return start_one(init, id_file, new_id)


def start_one(init: dict, id_file: str, run_id: str):
    import wandb

    write_text(id_file, run_id + "\n")
    run = wandb.init(**init, id=run_id, resume="allow")
    # Lightning's WandbLogger x-axis: every metric against the trainer's global step.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


def write_text(path: str, text: str) -> None:
    """Atomic, like liveml.core.atomic (not imported: it would import the package's deps)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main() -> None:
    # Below the training in the scheduler's eyes (W&B's service inherits it): on a busy or
    # small machine, W&B's few seconds of CPU come from idle time, not from the training loop.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    lines = iter(sys.stdin.readline, "")
    first = json.loads(next(lines))
    began = time.perf_counter()
    try:
        run = start(first["init"], first["id_file"], first.get("resumed_id"), first["new_id"])
    except BaseException as e:  # reported to the training, which raises it
        reply({"error": f"W&B could not start: {type(e).__name__}: {e}"})
        return
    reply(
        {
            "started": {
                "id": run.id,
                "dir": str(run.settings.sync_dir),
                "seconds": time.perf_counter() - began,
            }
        }
    )
    exit_code = 1  # stdin closed without a finish: the training process died
    for line in lines:
        message = json.loads(line)
        op = message["op"]
        try:
            if op == "hparams":
                run.config.update(message["params"], allow_val_change=True)
            elif op == "metrics":
                metrics, step = message["metrics"], message["step"]
                run.log(metrics if step is None else {**metrics, "trainer/global_step": step})
            elif op == "summary":
                run.summary.update(message["values"])
            elif op == "finish":
                exit_code = message["exit_code"]
                break
        except Exception as e:  # one failed call does not lose the rest of the run
            print(f"liveml: W&B {op} failed: {e}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    run.finish(exit_code=exit_code)
    reply({"finished": {"seconds": time.perf_counter() - began}})


if __name__ == "__main__":
    main()
