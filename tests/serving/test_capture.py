"""Request capture: sampling, complete records, the byte bound, and a request path that never waits.

Real files under tmp_path and the real writer thread; a slow writer is made honestly, by a
prediction value whose serialization (in the writer) waits for the test to let it go.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from liveml.serving.capture import Capture, iter_captures

MODEL = {"name": "detector", "fingerprint": "ab12cd34"}


def offer(cap: Capture, payload: bytes = b"x", *, task: str = "detection", **pred) -> bool:
    return cap.offer(
        task=task, payload=payload, suffix="png", prediction=pred or {"n": 1}, model=MODEL
    )


def files_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Gate:
    """A value whose str() (called by json.dumps(default=str) in the writer) blocks until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __str__(self) -> str:
        self.entered.set()
        self.opened.wait(10)
        return "gate"


def test_sample_zero_and_one(tmp_path):
    with Capture(tmp_path / "none", sample=0.0, max_bytes=10**6) as cap:
        assert not any(offer(cap) for _ in range(200))
    assert cap.stats["captured"] == 0
    assert list(iter_captures(tmp_path / "none")) == []
    with Capture(tmp_path / "all", sample=1.0, max_bytes=10**6) as cap:
        assert all(offer(cap) for _ in range(20))
        cap.flush()
        assert cap.stats["captured"] == 20
    assert len(list(iter_captures(tmp_path / "all"))) == 20


def test_sample_fraction_is_seeded(tmp_path):
    def decisions(root: Path) -> list[bool]:
        # max_bytes=1: the writer discards every record without I/O, which keeps this fast;
        # sampling is decided in offer() and the queue holds all, so True == sampled.
        with Capture(root, sample=0.3, max_bytes=1, queue_size=2000, seed=7) as cap:
            return [offer(cap) for _ in range(2000)]

    first = decisions(tmp_path / "a")
    assert 450 <= sum(first) <= 750
    assert decisions(tmp_path / "b") == first


def test_records_complete_and_in_time_order(tmp_path):
    payloads = [f"image {i}".encode() * (i + 1) for i in range(5)]
    before = time.time()
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        for i, data in enumerate(payloads):
            assert offer(cap, data, i=i, boxes=[[1, 2, 3, 4]])
        offer(cap, b"other task", task="keypoints")
    records = list(iter_captures(tmp_path, "detection"))
    assert [r["prediction"]["i"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    for rec, data in zip(records, payloads, strict=True):
        assert rec["input_path"].is_absolute()
        assert rec["input_path"].name == rec["input"] == f"{rec['id']}.png"
        assert rec["input_path"].read_bytes() == data
        assert rec["input_sha256"] == hashlib.sha256(data).hexdigest()
        assert rec["input_bytes"] == len(data)
        assert rec["model"] == MODEL and rec["task"] == "detection"
        when = datetime.fromisoformat(rec["timestamp"])
        assert when.utcoffset().total_seconds() == 0 and when.timestamp() >= before - 1
        assert rec["input_path"].parent.name == when.strftime("%Y-%m-%d")
    everything = list(iter_captures(tmp_path))
    assert len(everything) == 6 and everything[-1]["task"] == "keypoints"
    assert cap.stats["bytes"] == files_bytes(tmp_path)


def test_folder_stays_bounded_and_keeps_the_newest(tmp_path):
    max_bytes = 20 * 1024
    with Capture(tmp_path, sample=1.0, max_bytes=max_bytes, queue_size=512) as cap:
        for i in range(300):
            assert offer(cap, bytes([i % 256]) * 1024, i=i)
            if i % 50 == 0:
                cap.flush()
                assert files_bytes(tmp_path) <= max_bytes
    stats = cap.stats
    assert stats["captured"] == 300 and stats["dropped"] == 0 and stats["pruned"] > 0
    assert stats["bytes"] == files_bytes(tmp_path) <= max_bytes
    kept = [r["prediction"]["i"] for r in iter_captures(tmp_path)]
    assert kept == list(range(300 - len(kept), 300))  # exactly the newest survive
    assert len(kept) == 300 - stats["pruned"]


def test_restart_respects_existing_bytes(tmp_path):
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        for i in range(10):
            offer(cap, b"z" * 1000, i=i)
    on_disk = files_bytes(tmp_path)
    # A smaller bound on restart prunes at once; the next writes count the old bytes.
    with Capture(tmp_path, sample=1.0, max_bytes=on_disk // 2) as cap:
        assert cap.stats["bytes"] == files_bytes(tmp_path) <= on_disk // 2
        assert cap.stats["pruned"] > 0
        offer(cap, b"z" * 1000, i=10)
    assert cap.stats["bytes"] == files_bytes(tmp_path) <= on_disk // 2
    kept = [r["prediction"]["i"] for r in iter_captures(tmp_path)]
    assert kept[-1] == 10 and kept == list(range(11 - len(kept), 11))


def test_full_queue_drops_instead_of_blocking(tmp_path):
    with Capture(tmp_path, sample=1.0, max_bytes=10**6, queue_size=1) as cap:
        results = [offer(cap, b"p" * 1024, i=i) for i in range(1000)]
        cap.flush()
        stats = cap.stats
    assert stats["dropped"] > 0 and results.count(False) == stats["dropped"]
    assert stats["captured"] == results.count(True) == len(list(iter_captures(tmp_path)))


def test_offer_never_waits_for_a_busy_writer(tmp_path):
    gate = Gate()
    cap = Capture(tmp_path, sample=1.0, max_bytes=10**6, queue_size=4)
    try:
        assert offer(cap, gate=gate)
        assert gate.entered.wait(5)  # the writer is now stuck serializing that record
        results = [offer(cap, i=i) for i in range(100)]
        # All 100 calls returned while the writer was stuck: the queue filled, the rest dropped.
        assert results == [True] * 4 + [False] * 96
        assert cap.stats == {"captured": 0, "dropped": 96, "pruned": 0, "bytes": 0}
        with pytest.raises(TimeoutError):
            cap.flush(timeout=0.05)
    finally:
        gate.opened.set()
    cap.close()
    assert cap.stats["captured"] == 5
    assert next(iter_captures(tmp_path))["prediction"]["gate"] == "gate"  # oldest first


def test_oversized_record_is_dropped(tmp_path):
    with Capture(tmp_path, sample=1.0, max_bytes=4096) as cap:
        assert offer(cap, b"big" * 2000)  # queued; the writer refuses it
        assert offer(cap, b"small")
    assert cap.stats["dropped"] == 1 and cap.stats["captured"] == 1
    assert [r["input_bytes"] for r in iter_captures(tmp_path)] == [5]


@pytest.mark.parametrize(
    ("task", "suffix"),
    [("../etc", "png"), ("Detection", "png"), ("", "png"), ("a/b", "png"), ("det", "p.ng"),
     ("det", "../x"), ("det", ""), ("det", "json")],
)  # fmt: skip
def test_bad_names_raise(tmp_path, task, suffix):
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap, pytest.raises(ValueError):
        cap.offer(task=task, payload=b"x", suffix=suffix, prediction={}, model=MODEL)
    with pytest.raises(ValueError):
        list(iter_captures(tmp_path, "../etc"))


def test_reader_ignores_input_without_json(tmp_path):
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        offer(cap, b"kept")
    (rec,) = iter_captures(tmp_path)
    # What a kill between the two writes leaves: an input (newer, same day) and no JSON.
    day = rec["input_path"].parent
    (day / "99999999999999999999-deadbeef.png").write_bytes(b"orphan")
    # And a record whose input is gone.
    gone = dict(rec, id="00000000000000000001-00000000", input="00000000000000000001-00000000.png")
    del gone["input_path"]
    (day / "00000000000000000001-00000000.json").write_text(json.dumps(gone))
    assert [r["id"] for r in iter_captures(tmp_path)] == [rec["id"]]
    # A restart counts the orphans, so they are pruned like anything else.
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        assert cap.stats["bytes"] == files_bytes(tmp_path)


def test_close_is_idempotent(tmp_path):
    cap = Capture(tmp_path, sample=1.0, max_bytes=10**6)
    offer(cap)
    cap.close()
    cap.close()
    assert not cap._thread.is_alive()
    assert offer(cap) is False
    assert cap.stats["captured"] == 1


def test_write_error_is_counted_and_writer_survives(tmp_path, caplog):
    (tmp_path / "broken").write_text("a file where the task folder should be")
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        with caplog.at_level(logging.WARNING, logger="liveml.serving.capture"):
            for _ in range(3):
                assert offer(cap, task="broken")
            cap.flush()
        assert cap.stats["dropped"] == 3 and cap.stats["captured"] == 0
        assert len(caplog.records) == 1  # one warning per streak of failures, not per record
        assert cap._thread.is_alive()
        assert offer(cap, b"fine", task="detection")
        cap.flush()
        assert cap.stats["captured"] == 1
    assert [r["task"] for r in iter_captures(tmp_path)] == ["detection"]
    assert (tmp_path / "broken").is_file()


def test_restart_removes_temps_of_a_killed_writer(tmp_path):
    import os
    import subprocess
    import sys

    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        offer(cap, b"kept")
    (rec,) = iter_captures(tmp_path)
    day = rec["input_path"].parent
    # What a writer process killed mid-write leaves: hidden temp siblings naming its pid.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rid = "99999999999999999999-deadbeef"
    stale = [
        day / f".{rid}.png.{dead.pid}-abcd1234.tmp",
        day / f".{rid}.json.{dead.pid}-x1y2z3w4.tmp",
    ]
    for p in stale:
        p.write_bytes(b"torn" * 1000)
        os.utime(p, (time.time() - 120, time.time() - 120))
    with Capture(tmp_path, sample=1.0, max_bytes=10**6) as cap:
        assert not any(p.exists() for p in stale)
        assert cap.stats["bytes"] == files_bytes(tmp_path)
    assert [r["id"] for r in iter_captures(tmp_path)] == [rec["id"]]
