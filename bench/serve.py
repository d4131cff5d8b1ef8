"""Serving: latency p50/p99 and throughput of `liveml serve` at concurrency 1, 8 and 32, side by
side with (a) the raw model call in process and (b) a naive server, one forward per request.

Targets: server overhead at concurrency 1 <= 2 ms over the raw forward (p50); throughput at
concurrency 32 >= 2x the naive server, from batching.

    .venv/bin/python bench/serve.py [--task defects|speech] [--runtime torch|onnx]
        [--requests 400] [--seconds 20] [--concurrency 1,8,32] [--json OUT]
        [--threads N] [--naive-mode inline|threads] [--max-batch B] [--max-wait-ms W]

What each column measures, all in one run on the same inputs (the first `--inputs` files of
the task's test split, cycled):

- raw: `predictor.run([prepared])` in this process, sequentially: the model forward with the
  per-item pre/post-processing the server does, at batch 1. Decoding the upload is not in it
  (it is printed on its own line) but is in both servers' figures.
- liveml: `liveml serve` as a subprocess (capture off), dynamic batching on.
- naive: a FastAPI/uvicorn app of this file (`--naive-server`), same predictor, same decode and
  answer, one `predictor.run([item])` per request, run inline in the async handler: the model
  is loaded and called on one thread, as liveml's inference thread does (`--naive-mode threads`
  runs each request in starlette's threadpool instead, forwards overlapping). Batching is the
  only difference.

The load generator is another subprocess of this file (`--load`): aiohttp, C workers in a
closed loop over loopback, each level bounded by `--requests` and `--seconds` after a warm-up.
It is a benchmark, not a test: it always exits 0 and prints MISSED next to a missed target.
The load generator shares the machine's cores with the server; its CPU use and the server's
are printed per level (in cores), so a starved server shows. Speech batches only stack clips
of equal length, so its batching gain depends on how many distinct clips are in flight.

Note (2-core CPU, torch runtime): a forward called from a second thread of a process that
already ran torch on another thread was ~3x slower (two OpenMP pools fighting for 2 cores);
that is why liveml loads, warms and runs every model on one inference thread, and why the
naive server here also stays on one thread. The "call ms" column (liveml's own model call,
from its /metrics) shows whether the server's forward matches the raw one.
"""

# No `from __future__ import annotations`: FastAPI resolves the naive endpoint's `Request`
# annotation from module globals, and `fastapi` is imported only in the naive server process.
import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASKS = {
    "defects": ("data/defects/export", "data/defects/raw/images/test", ("*.png", "*.jpg")),
    "speech": ("data/speech/export", "data/speech/raw/audio/test", ("*.wav",)),
}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
CONTENT_TYPES[".wav"] = "audio/wav"
OVERHEAD_TARGET_MS = 2.0
SPEEDUP_TARGET = 2.0


# --- figures ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks, as numpy's default."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(latencies_s: list[float], wall_s: float) -> dict:
    ms = [t * 1000 for t in latencies_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "throughput_rps": len(ms) / wall_s if wall_s > 0 else float("nan"),
        "n": len(ms),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- inputs and the in-process model --------------------------------------------------------


def test_inputs(task: str, count: int) -> list[Path]:
    _, folder, patterns = TASKS[task]
    files = sorted(f for p in patterns for f in (ROOT / folder).glob(p))
    if not files:
        sys.exit(f"no test inputs in {folder}; fix: run `make repro` (or `dvc pull`) first")
    return files[:count]


def load_predictor(export_dir: str, runtime: str):
    from liveml.serving.config import ServeConfig
    from liveml.serving.predictors import build_predictor
    from liveml.serving.runtime import load_runtime

    rt = load_runtime(ROOT / export_dir, runtime)
    limits = ServeConfig(models={rt.task: export_dir}).limits  # the server's default limits
    predictor = build_predictor(rt, limits)
    predictor.run([predictor.warmup_input()])
    return predictor


class Raw:
    """The in-process model: decode time per input, and timed sequential `run` calls on the
    decoded inputs at batch 1 (what a request costs) or at a full batch (what batching can
    reach: the same input repeated, as speech stacks only equal lengths)."""

    def __init__(self, predictor, payloads: list[bytes]):
        self.predictor = predictor
        decode = []
        for data in payloads * max(1, 20 // len(payloads)):
            start = time.perf_counter()
            predictor.decode(data, None)
            decode.append(time.perf_counter() - start)
        self.decode_p50_ms = percentile([t * 1000 for t in decode], 50)
        self.prepared = [predictor.decode(data, None) for data in payloads]
        for p in self.prepared * 2:  # warm-up: first calls at a new input size are slow
            predictor.run([p])

    def measure(self, batch: int, requests: int, seconds: float) -> dict:
        if batch > 1:
            self.predictor.run([self.prepared[0]] * batch)  # warm-up at this batch size
        times = []
        cpu = time.process_time()
        began = time.perf_counter()
        while len(times) < requests and time.perf_counter() - began < seconds:
            items = [self.prepared[len(times) % len(self.prepared)]] * batch
            start = time.perf_counter()
            self.predictor.run(items)
            times.append(time.perf_counter() - start)
        wall = time.perf_counter() - began
        out = summary(times, wall)
        out["throughput_rps"] *= batch  # inputs per second
        out["server_cpu"] = (time.process_time() - cpu) / wall
        return out


# --- the naive server -------------------------------------------------------------------------


def naive_server(export_dir: str, runtime: str, port: int, mode: str) -> None:
    """One forward per request: decode, `run([item])`, answer; no batching."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    predictor = load_predictor(export_dir, runtime)
    app = FastAPI(title="naive")

    def answer(data: bytes) -> dict:
        start = time.perf_counter()
        item = predictor.decode(data, None)
        result = predictor.run([item])[0]
        return {
            "model": predictor.runtime.identity,
            "results": [{"filename": None, **result}],
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    @app.post(f"/v1/{predictor.task}")
    async def predict(request: Request) -> JSONResponse:
        data = await request.body()
        if mode == "threads":  # what a plain `def` endpoint does: the threadpool, overlapping
            return JSONResponse(await run_in_threadpool(answer, data))
        return JSONResponse(answer(data))  # one forward at a time, on the loading thread

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


# --- the load generator -------------------------------------------------------------------


METRIC_RE = r'^liveml_(batch_size|inference_seconds)_(sum|count)\{{model="{task}"\}} (\S+)$'


async def server_stats(session, base: str, task: str) -> dict | None:
    """Sums and counts of liveml's batch-size and model-call histograms, or None when the
    server has no such metrics (the naive one)."""
    try:
        async with session.get(f"{base}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
    except Exception:
        return None
    found = re.findall(METRIC_RE.format(task=task), text, re.MULTILINE)
    stats = {f"{name}_{kind}": float(value) for name, kind, value in found}
    return stats if len(stats) == 4 else None


async def load(args) -> dict:
    import aiohttp

    files = [Path(f) for f in args.files.split(",")]
    payloads = [(f.read_bytes(), CONTENT_TYPES[f.suffix.lower()]) for f in files]
    url = f"{args.load}/v1/{args.task}"
    c = int(args.concurrency)
    connector = aiohttp.TCPConnector(limit=c)
    timeout = aiohttp.ClientTimeout(total=max(60.0, args.seconds * 3))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        latencies: list[float] = []
        errors: list[str] = []
        issued = 0

        async def worker(limit: int, deadline: float, record: bool) -> None:
            nonlocal issued
            while issued < limit and time.perf_counter() < deadline:
                data, ctype = payloads[issued % len(payloads)]
                issued += 1
                start = time.perf_counter()
                try:
                    async with session.post(
                        url, data=data, headers={"Content-Type": ctype}
                    ) as resp:
                        await resp.read()
                        ok = resp.status == 200
                        why = f"HTTP {resp.status}"
                except Exception as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                if not record:
                    continue
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(why)

        async def run(limit: int, seconds: float, record: bool) -> None:
            nonlocal issued
            issued = 0
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(worker(limit, deadline, record) for _ in range(c)))

        await run(max(args.warmup, c), args.seconds, record=False)  # opens all c connections
        before = await server_stats(session, args.load, args.task)
        cpu0, srv0 = time.process_time(), cpu_seconds(args.pid) if args.pid else None
        began = time.perf_counter()
        await run(args.requests, args.seconds, record=True)
        wall = time.perf_counter() - began
        cpu1, srv1 = time.process_time(), cpu_seconds(args.pid) if args.pid else None
        after = await server_stats(session, args.load, args.task)

    out = summary(latencies, wall)
    out.update(ok=len(latencies), errors=len(errors), wall_s=wall)
    out["client_cpu"] = (cpu1 - cpu0) / wall
    out["server_cpu"] = (srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None
    out["mean_batch"] = out["model_call_ms"] = None
    if before and after and after["batch_size_count"] > before["batch_size_count"]:
        d = {k: after[k] - before[k] for k in after}
        out["mean_batch"] = d["batch_size_sum"] / d["batch_size_count"]
        out["model_call_ms"] = 1000 * d["inference_seconds_sum"] / d["inference_seconds_count"]
    if errors:
        out["first_error"] = errors[0]
    return out


def run_load(base: str, args, files: list[Path], concurrency: int, pid: int) -> dict:
    cmd = [sys.executable, __file__, "--load", base, "--task", args.task]
    cmd += ["--files", ",".join(str(f) for f in files), "--pid", str(pid)]
    cmd += ["--concurrency", str(concurrency), "--requests", str(args.requests)]
    cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=3 * args.seconds + 120
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"load generator failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- servers as subprocesses --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Subprocess:
    """A server process, its output in a log file; always terminated on exit."""

    def __init__(self, name: str, cmd: list[str], port: int, logdir: Path):
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.log = logdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {self.name} server did not get ready; its log:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the report -----------------------------------------------------------------------------


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def row(level: int, name: str, r: dict) -> str:
    ok = f"{r.get('ok', r['n'])}/{r.get('errors', 0)}"
    return (
        f"{level:>4}  {name:<7}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['throughput_rps']:>9.1f}"
        f"{ok:>10}{fmt(r.get('mean_batch'), '.2f'):>7}{fmt(r.get('model_call_ms'), '.2f'):>8}"
        f"{fmt(r.get('server_cpu'), '.2f'):>6}{fmt(r.get('client_cpu'), '.2f'):>6}"
    )


def bench(args) -> dict:
    import torch

    sys.stdout.reconfigure(line_buffering=True)  # progress on stderr interleaves in order
    # SIGTERM unwinds like Ctrl-C, so the `finally` below stops the server processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from liveml.release.speed import device_name

    export_dir = TASKS[args.task][0]
    files = test_inputs(args.task, args.inputs)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"device: {device_name(torch.device('cpu'))}, {os.cpu_count()} cores")
    threads = "set by --threads" if args.threads else "the default"
    print(
        f"torch threads: {torch.get_num_threads()} (bench and both servers: {threads}); "
        f"task {args.task}, runtime {args.runtime}"
    )
    size = sum(f.stat().st_size for f in files) / len(files) / 1024
    print(
        f"inputs: {len(files)} files of {files[0].parent.relative_to(ROOT)} "
        f"(mean {size:.0f} KiB), cycled; per level <= {args.requests} requests or "
        f"{args.seconds:g} s, after {args.warmup} warm-up requests"
    )

    from liveml.serving.config import ServeConfig

    max_batch = args.max_batch or ServeConfig.max_batch
    raw = Raw(load_predictor(export_dir, args.runtime), [f.read_bytes() for f in files])
    ceiling = raw.measure(max_batch, max(5, args.requests // max_batch), args.seconds)
    print(f"decode p50 {raw.decode_p50_ms:.2f} ms per input (in both servers, not in raw)")
    print(
        f"raw forward at batch {max_batch} (what batching can reach): "
        f"p50 {ceiling['p50_ms']:.2f} ms per call, {ceiling['throughput_rps']:.1f} inputs/s"
    )

    serve = [str(BIN / "liveml"), "serve", "--model", f"{args.task}={export_dir}"]
    serve += ["--runtime", args.runtime, "--capture-sample", "0"]
    if args.max_batch:
        serve += ["--max-batch", str(args.max_batch)]
    if args.max_wait_ms is not None:
        serve += ["--max-wait-ms", str(args.max_wait_ms)]
    naive = [sys.executable, __file__, "--naive-server", "--task", args.task]
    naive += ["--runtime", args.runtime, "--naive-mode", args.naive_mode]
    results: dict[int, dict] = {}
    servers: list[Subprocess] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as logdir:
        try:
            port = free_port()
            servers.append(Subprocess("liveml", [*serve, "--port", str(port)], port, Path(logdir)))
            port = free_port()
            servers.append(Subprocess("naive", [*naive, "--port", str(port)], port, Path(logdir)))
            for server in servers:
                server.wait_ready()
            # Each level measures raw, liveml and naive back to back (raw again at each level,
            # its figures do not depend on c), so a change in the machine's load hits all three.
            for c in levels:
                results[c] = {"raw": raw.measure(1, args.requests, args.seconds)}
                for s in servers:
                    results[c][s.name] = run_load(s.base, args, files, c, s.proc.pid)
                print(f"  c={c} done", file=sys.stderr, flush=True)
        finally:
            for server in servers:
                server.stop()

    print("\n   c  server    p50 ms   p99 ms    req/s  ok/errors  batch call ms   srv   cli")
    for c in levels:
        for name in ("raw", "liveml", "naive"):
            print(row(c, name, results[c][name]))
            if "first_error" in results[c][name]:
                print(f"        first error: {results[c][name]['first_error']}")
    print(
        "raw: sequential batch-1 calls in this process, re-measured at each level; batch and\n"
        "call ms: liveml's mean inputs per model call and mean model call; srv, cli: CPU cores\n"
        "used by the server (raw: this process) and by the load generator"
    )

    report = {
        "task": args.task,
        "runtime": args.runtime,
        "torch_threads": torch.get_num_threads(),
        "decode_p50_ms": raw.decode_p50_ms,
        "raw_full_batch": {"batch": max_batch, **ceiling},
        "levels": results,
    }
    print()
    if 1 in results:
        over = results[1]["liveml"]["p50_ms"] - results[1]["raw"]["p50_ms"]
        miss = "" if over <= OVERHEAD_TARGET_MS else "  MISSED"
        print(
            f"overhead at c=1: liveml p50 - raw p50 = {over:.2f} ms "
            f"(target <= {OVERHEAD_TARGET_MS:g} ms){miss}"
        )
        report["overhead_c1_ms"] = over
    top = 32 if 32 in results else max(results)
    naive_rps = results[top]["naive"]["throughput_rps"]
    ratio = results[top]["liveml"]["throughput_rps"] / naive_rps if naive_rps else float("nan")
    miss = "" if ratio >= SPEEDUP_TARGET else "  MISSED"
    target = f"target >= {SPEEDUP_TARGET:g}x" if top == 32 else "the target is at c=32"
    print(f"throughput at c={top}: liveml / naive = {ratio:.2f} x ({target}){miss}")
    print(f"liveml mean batch size at c={top}: {fmt(results[top]['liveml']['mean_batch'], '.2f')}")
    report["throughput_ratio"] = {"concurrency": top, "liveml_over_naive": ratio}
    if args.task == "speech":
        print(
            f"note: speech stacks only equal-length clips; {len(files)} distinct clips cycle, "
            f"so at most ~c/{len(files)} share a model call"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="defects")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--requests", type=int, default=400, help="per level and server")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level and server")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--inputs", type=int, default=8, help="distinct test inputs cycled")
    parser.add_argument("--warmup", type=int, default=20, help="requests before each level")
    parser.add_argument("--max-batch", type=int, help="liveml serve --max-batch")
    parser.add_argument("--max-wait-ms", type=float, help="liveml serve --max-wait-ms")
    parser.add_argument("--naive-mode", choices=("inline", "threads"), default="inline")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads in the bench and both servers (OMP_NUM_THREADS; torch runtime only)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    # Internal: this file is also the naive server and the load generator.
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:  # before torch is imported here or in the servers, which inherit it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.naive_server:
        naive_server(TASKS[args.task][0], args.runtime, args.port, args.naive_mode)
        return
    if args.load:
        print(json.dumps(asyncio.run(load(args))))
        return
    report = bench(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
