"""Prometheus metrics across worker processes: the shared folder's life, and what a scrape adds up
when workers come and go. Each "worker" is a real Python process (prometheus_client picks its
multiprocess mode when it is imported, so it cannot be switched on inside this one)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from liveml.serving.metrics import (
    DIR_PREFIX,
    MULTIPROC_ENV,
    remove_stale_dirs,
    shared_dir,
)

WORKER = textwrap.dedent(
    """
    import sys
    from liveml.serving.metrics import ServerMetrics

    m = ServerMetrics()
    assert m.shared, "not in multiprocess mode"
    for _ in range(int(sys.argv[1])):
        m.requests.labels("speech", "200").inc()
    m.track(m.decoding, lambda: 3)
    m.info.labels("speech", "n", "f", "torch").set(1)
    if sys.argv[2] == "close":
        m.close()  # a worker's orderly exit (the app's shutdown)
    """
)
# A worker answering a scrape; its first line names its pid.
SCRAPE = (
    "import os; from liveml.serving.metrics import ServerMetrics; "
    "print(f'# pid {os.getpid()}'); print(ServerMetrics().render().decode())"
)


def run(code: str, folder: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, MULTIPROC_ENV: str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def value(text: str, prefix: str) -> float | None:
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]
    return sum(found) if found else None


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_counters_add_up_over_workers_and_gone_workers_leave_the_live_gauges(tmp_path):
    run(WORKER, tmp_path, "3", "close")
    run(WORKER, tmp_path, "4", "killed")  # exits without its shutdown, as after SIGKILL
    text = run(SCRAPE, tmp_path)
    # Counts of finished workers stay: the sum is monotone whoever answers the scrape.
    assert value(text, 'liveml_requests_total{model="speech",status="200"}') == 7
    # Live gauges count running workers only: both are gone (the scrape forgot the killed one).
    assert value(text, "liveml_decoding_inputs") in (None, 0)
    assert value(text, "liveml_model_info{") in (None, 0)
    scraper = text.splitlines()[0].split()[-1]  # its own live gauges were there to read
    assert [f for f in os.listdir(tmp_path) if f.startswith("gauge_live")] == [
        f"gauge_livesum_{scraper}.db"
    ]


def test_live_gauges_add_up_over_running_workers(tmp_path):
    # One worker that stays up until told (its stdin closes), then exits in order.
    code = WORKER.replace('if sys.argv[2] == "close":', "sys.stdin.read()\nif True:")
    worker = subprocess.Popen(
        [sys.executable, "-c", code, "2", "close"],
        env={**os.environ, MULTIPROC_ENV: str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(f.startswith("gauge_livemax") for f in os.listdir(tmp_path)):
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # The worker answering the scrape has 3 inputs decoding too, and serves the model.
        scrape = textwrap.dedent(
            """
            from liveml.serving.metrics import ServerMetrics
            m = ServerMetrics()
            m.track(m.decoding, lambda: 3)
            m.info.labels("speech", "n", "f", "torch").set(1)
            print(m.render().decode())
            """
        )
        text = run(scrape, tmp_path)
        assert value(text, "liveml_decoding_inputs") == 6  # summed over the running workers
        assert value(text, 'liveml_model_info{fingerprint="f"') == 1  # their max, not a sum
        assert value(text, 'liveml_requests_total{model="speech",status="200"}') == 2
    finally:
        worker.communicate("", timeout=30)
    assert worker.returncode == 0
    assert value(run(SCRAPE, tmp_path), "liveml_decoding_inputs") in (None, 0)


def test_shared_dir_is_private_removed_after_and_clears_stale_ones(tmp_path):
    stale = tmp_path / f"{DIR_PREFIX}{dead_pid()}-abc"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"x")
    mine = tmp_path / f"{DIR_PREFIX}{os.getpid()}-def"  # a running server's: kept
    mine.mkdir()
    other = tmp_path / "liveml-metrics-notapid"
    other.mkdir()
    with shared_dir(tmp_path) as path:
        folder = Path(path)
        assert folder.parent == tmp_path and folder.name.startswith(f"{DIR_PREFIX}{os.getpid()}-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert not stale.exists() and mine.exists() and other.exists()
    assert not folder.exists()
    assert remove_stale_dirs(tmp_path) == []  # mine's process (this one) still runs
