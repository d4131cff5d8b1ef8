"""The server's Prometheus metrics. Every series carries the task as `model`.

One process (`liveml serve`): the metrics live in a registry of their own (one per app, so tests
and several apps in one process never share counters) and `/metrics` renders it.

Several worker processes (`liveml serve --workers N`): each process would count only the
requests it answered, and scrapes, spread over the workers behind one port, would see the
counters jump between them (1, 5, 1, 5: `rate()` reads resets). So the server runs
prometheus_client's multiprocess mode: `shared_dir()` makes a fresh private folder and names it
in PROMETHEUS_MULTIPROC_DIR before the workers start, every worker writes its values there
(memory-mapped files per process), and `/metrics`, whichever worker answers it, adds up all
of them. Gauges say how: the live ones (queue depth, inputs decoding, body bytes) are summed
over the running workers, the model info is the highest value any running worker holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

# prometheus_client reads this when it is imported: set before a worker process starts.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The shared folder of one `liveml serve --workers N`: <tmp>/liveml-metrics-<server pid>-<random>.
DIR_PREFIX = "liveml-metrics-"
_DIR_NAME = re.compile(rf"^{DIR_PREFIX}(\d+)-")
# Files of gauges summed (or maxed) over running processes only: gauge_live<mode>_<pid>.db.
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode when this process runs in it, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServerMetrics:
    """Request counts, latencies, batch sizes, errors, queue depth and captures per model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.shared = multiprocess_dir()
        # Gauges of a value the server holds (queue depth, ...): read at each scrape in one
        # process; in multiprocess mode written to the shared folder by `refresh`.
        self._tracked: dict[int, tuple[Gauge, Callable[[], float]]] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "liveml_requests", "Prediction requests by outcome", ["model", "status"], registry=r
        )
        self.latency = Histogram(
            "liveml_request_seconds",
            "Prediction request latency (read, decode, queue, model, answer)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "liveml_inference_seconds",
            "Model call time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "liveml_batch_size",
            "Inputs per model call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "liveml_errors", "Failed requests by error code", ["model", "code"], registry=r
        )
        self.queue_depth = Gauge(
            "liveml_queue_depth",
            "Inputs waiting for a batch",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.decoding = Gauge(
            "liveml_decoding_inputs",
            "Inputs being decoded or waiting for a decode thread (all models)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.body_bytes = Gauge(
            "liveml_request_body_bytes",
            "Request-body bytes held in memory by requests in progress (max_inflight_bytes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.captured = Counter(
            "liveml_captured_inputs", "Inputs queued for the capture folder", ["model"], registry=r
        )
        self.reloads = Counter(
            "liveml_model_reloads",
            "Hot reloads of a model whose export changed, by outcome (ok, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.info = Gauge(
            "liveml_model_info",
            "The served model (value 1): name, fingerprint, runtime",
            ["model", "name", "fingerprint", "runtime"],
            registry=r,
            # 1 while any running worker serves that model (after a hot reload, until all do).
            multiprocess_mode="livemax",
        )

    def track(self, gauge: Gauge, value: Callable[[], float]) -> None:
        """Show `value()` as `gauge` (a gauge without labels, or one child of a labelled one);
        tracking the same gauge again replaces its function."""
        if self.shared is None:
            gauge.set_function(value)  # read when scraped
        else:
            self._tracked[id(gauge)] = (gauge, value)
            gauge.set(value())

    def refresh(self) -> None:
        """Write the tracked values to the shared folder (multiprocess mode: other workers
        answer scrapes too, so the server calls this every second and before each scrape)."""
        for gauge, value in self._tracked.values():
            gauge.set(value())

    def render(self) -> bytes:
        """The exposition text: this registry, or in multiprocess mode every worker's values."""
        if self.shared is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        self.refresh()
        forget_dead_processes(self.shared)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared)
        return generate_latest(registry)

    def close(self) -> None:
        """A worker's exit: its live gauges leave the sums (its counters stay counted)."""
        if self.shared is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), self.shared)


def forget_dead_processes(path: str | Path) -> list[int]:
    """mark_process_dead for every process with live-gauge files in `path` that no longer runs
    (a worker killed before its shutdown ran; uvicorn starts a new one). Returns their pids."""
    from prometheus_client.multiprocess import mark_process_dead

    dead = set()
    for f in os.listdir(path):
        m = _LIVE_FILE.match(f)
        if m and not _running(int(m.group(1))):
            dead.add(int(m.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, str(path))
    return sorted(dead)


@contextlib.contextmanager
def shared_dir(root: str | Path | None = None) -> Iterator[str]:
    """A fresh private folder (mode 0700) for the workers' metrics, removed on exit. Folders that
    earlier servers left behind (killed before they could remove theirs) are removed first."""
    root = Path(root or tempfile.gettempdir())
    removed = remove_stale_dirs(root)
    if removed:
        log.info("removed %d metrics folder(s) of servers no longer running", len(removed))
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_dirs(root: str | Path) -> list[Path]:
    """Remove this user's metrics folders in `root` whose server process no longer runs."""
    removed = []
    for entry in Path(root).glob(f"{DIR_PREFIX}*"):
        m = _DIR_NAME.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or _running(int(m.group(1))):
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
