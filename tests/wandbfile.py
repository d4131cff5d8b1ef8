"""Reading offline W&B run files (.wandb) in tests: the real records W&B wrote, no API mocks."""

from __future__ import annotations

import struct
import time
from pathlib import Path


def wandb_records(path: Path) -> list:
    """The records of an offline run's .wandb file (LevelDB log format of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start, MIDDLE/LAST append
        if kind in (1, 4):
            rec = pb2.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def exit_codes(path: Path, wait_s: float = 20.0) -> list[int]:
    """Exit codes in the run file; wandb-core appends the exit record just after `finish`."""
    deadline = time.monotonic() + wait_s
    while True:
        recs = wandb_records(path)
        codes = [r.exit.exit_code for r in recs if r.WhichOneof("record_type") == "exit"]
        if codes or time.monotonic() > deadline:
            return codes
        time.sleep(0.1)


def wandb_file(project_root: Path, run_id: str) -> Path:
    files = sorted((project_root / "wandb" / "wandb").glob(f"offline-run-*-{run_id}/*.wandb"))
    assert files, f"no offline W&B run {run_id} under {project_root / 'wandb'}"
    return files[-1]
