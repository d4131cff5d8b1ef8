"""`liveml serve` as a user runs it: a real process, its flags, its refusals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

LIVEML = str(Path(sys.executable).parent / "liveml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [LIVEML, "serve", "--port", str(port), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("server never became ready")


def stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def test_serve_defaults_to_the_pipelines_exports(
    tiny_pipeline, exports, defect_image_file, tmp_path
):
    proc, url = start(["--runtime", "onnx", "--capture-dir", str(tmp_path / "cap")], tiny_pipeline)
    try:
        wait_ready(proc, url)
        models = requests.get(f"{url}/v1/models").json()["models"]
        assert {m["task"] for m in models} == set(exports)
        assert {m["runtime"] for m in models} == {"onnx"}
        r = requests.post(
            f"{url}/v1/defects",
            data=defect_image_file.read_bytes(),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200, r.text
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out


def test_workers_and_token_from_the_environment(exports, speech_wav_file, tmp_path):
    args = ["--model", f"speech={exports['speech']}", "--workers", "2", "--capture-sample", "0"]
    proc, url = start(args, tmp_path, LIVEML_API_TOKEN="t0ken")
    try:
        wait_ready(proc, url)
        clip = speech_wav_file.read_bytes()
        headers = {"Content-Type": "audio/wav"}
        assert requests.post(f"{url}/v1/speech", data=clip, headers=headers).status_code == 401
        headers["Authorization"] = "Bearer t0ken"
        # /readyz answered from one worker; the other may still be loading its model (503
        # not_ready): wait until both answer.
        deadline = time.monotonic() + 60
        while True:
            replies = [
                requests.post(f"{url}/v1/speech", data=clip, headers=headers) for _ in range(4)
            ]
            codes = {r.status_code for r in replies}
            if codes == {200} or time.monotonic() > deadline:
                break
            assert all(r.status_code == 200 or "not_ready" in r.text for r in replies), codes
            time.sleep(0.5)
        assert codes == {200}
    finally:
        stop(proc)


def test_a_tampered_model_file_stops_the_start_with_the_fix(exports, tmp_path):
    tampered = shutil.copytree(exports["defects"], tmp_path / "defects")
    with open(tampered / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    out = subprocess.run(
        [LIVEML, "serve", "--runtime", "onnx", "--model", f"defects={tampered}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "SHA-256" in out.stderr and "dvc checkout" in out.stderr


def test_serve_without_exports_names_the_fix(tmp_path):
    out = subprocess.run(
        [LIVEML, "serve", "--model", "defects"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "TASK=DIR" in out.stderr
    missing = subprocess.run(
        [LIVEML, "serve", "--model", f"defects={tmp_path}"], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "make repro" in missing.stderr


def test_connection_limits_reach_every_worker(exports, tmp_path):
    # Settings without a flag come from LIVEML_SERVE_*; with --workers each uvicorn worker
    # process reads them from the settings `liveml serve` hands it.
    args = ["--model", f"speech={exports['speech']}", "--workers", "2", "--capture-sample", "0"]
    proc, url = start(
        args, tmp_path, LIVEML_SERVE_HEADER_TIMEOUT_S="1", LIVEML_SERVE_MAX_HEADER_BYTES="4096"
    )
    try:
        # The limits hold from the start, before the models are loaded.
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):  # whichever worker accepts the connection
            with socket.create_connection((host, int(port)), timeout=10) as s:
                start_at = time.monotonic()
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                reply = s.recv(4096)
                assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
                assert time.monotonic() - start_at < 3
            big = requests.get(f"{url}/healthz", headers={"X-Big": "a" * 8000}, timeout=10)
            assert big.status_code == 431
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        # Killed, not stopped: a graceful stop would wait for the models still loading.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def requests_total(url: str) -> float:
    """The sum of `liveml_requests_total` over its labels, from one scrape."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("liveml_requests_total{")
    )


def test_workers_count_into_one_set_of_metrics(exports, speech_wav_file, tmp_path):
    # Two worker processes behind one port: every scrape, whichever worker answers it, counts
    # the requests of both (prometheus_client's multiprocess mode), so the counter only grows.
    args = ["--model", f"speech={exports['speech']}", "--workers", "2", "--capture-sample", "0"]
    proc, url = start([*args, "--runtime", "onnx"], tmp_path, TMPDIR=str(tmp_path))
    clip = speech_wav_file.read_bytes()
    try:
        wait_ready(proc, url)
        (folder,) = tmp_path.glob(f"liveml-metrics-{proc.pid}-*")  # the server's private one
        sent = 0
        # Until both workers answered some (each connection goes to whichever accepts it).
        while len({f.name for f in folder.glob("counter_*.db")}) < 2 or sent < 10:
            assert sent < 300, "the requests never reached the second worker"
            requests.post(
                f"{url}/v1/speech", data=clip, headers={"Content-Type": "audio/wav"}, timeout=60
            )
            sent += 1
            # Counted before the answer leaves the worker: each scrape sees exactly `sent`.
            assert requests_total(url) == sent
        scrapes = [requests_total(url) for _ in range(8)]
        assert scrapes == [sent] * 8
        text = requests.get(f"{url}/metrics", timeout=10).text
        info = [line for line in text.splitlines() if line.startswith("liveml_model_info{")]
        assert info and all(line.endswith(" 1.0") for line in info), info  # not 2 (a sum)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert not folder.exists()  # removed with the server
