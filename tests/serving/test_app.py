"""The HTTP API against real servers on 127.0.0.1: both tasks, both runtimes, bad input, load."""

from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from PIL import Image

from liveml.serving.app import public_card
from liveml.serving.capture import iter_captures
from liveml.tasks import get_task


def post(url: str, data: bytes, content_type: str, **kw) -> requests.Response:
    return requests.post(url, data=data, headers={"Content-Type": content_type}, timeout=30, **kw)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(wave: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module", params=["torch", "onnx"])
def server(request, base_config, start_server):
    """(runtime, base URL) of a server for both tasks on each runtime."""
    from dataclasses import replace

    with start_server(replace(base_config, runtime=request.param)) as (url, _):
        yield request.param, url


@pytest.fixture(scope="module")
def photo(defect_image_file: Path) -> bytes:
    return defect_image_file.read_bytes()


@pytest.fixture(scope="module")
def clip(speech_wav_file: Path) -> bytes:
    return speech_wav_file.read_bytes()


def test_probes_and_model_cards(server, exports):
    runtime, url = server
    assert requests.get(f"{url}/healthz").json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz").json()["models"] == sorted(exports)
    models = {m["task"]: m for m in requests.get(f"{url}/v1/models").json()["models"]}
    assert set(models) == set(exports)
    for task, export_dir in exports.items():
        card = json.loads((export_dir / "model_card.json").read_text())
        # An open server (no token) shows the card without host detail (test_security.py).
        assert models[task]["card"]["lineage"] == public_card(card["lineage"])
        assert models[task]["card"]["lineage"]["fingerprint"] == card["lineage"]["fingerprint"]
        assert models[task]["runtime"] == runtime
        # What a client needs to call the endpoint comes from the task's contract.
        contract = get_task(task)
        assert models[task]["endpoint"] == f"/v1/{task}"
        assert models[task]["accepts"] == sorted(contract.media_types)
        assert models[task]["suffixes"] == list(contract.suffixes)
        assert isinstance(models[task]["parameters"], dict)
    assert "<html" in requests.get(url).text.lower()


def test_defects_answers_with_boxes_and_the_model_identity(server, photo, exports):
    runtime, url = server
    r = post(f"{url}/v1/defects", photo, "image/png")
    assert r.status_code == 200, r.text
    body = r.json()
    card = json.loads((exports["defects"] / "model_card.json").read_text())
    fmt = {"torch": "torchscript", "onnx": "onnx"}[runtime]
    entry = next(e for e in card["exports"] if e["format"] == fmt)
    assert body["model"]["sha256"] == entry["sha256"]
    assert body["model"]["fingerprint"] == card["lineage"]["fingerprint"]
    (result,) = body["results"]
    w, h = Image.open(io.BytesIO(photo)).size
    assert (result["width"], result["height"]) == (w, h)
    assert result["detections"], "the tiny detector (score_thresh 0) always answers with boxes"
    for d in result["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        assert d["label"] in card["classes"] and 0 <= d["score"] <= 1
    kept = post(f"{url}/v1/defects?min_score=0.5", photo, "image/png").json()
    assert all(d["score"] >= 0.5 for d in kept["results"][0]["detections"])


def test_boxes_come_back_in_the_uploaded_photos_pixels(server, photo):
    _, url = server
    img = Image.open(io.BytesIO(photo)).convert("RGB")
    big = img.resize((img.width * 3, img.height * 2), Image.NEAREST)
    small = post(f"{url}/v1/defects", png_bytes(img), "image/png").json()["results"][0]
    large = post(f"{url}/v1/defects", png_bytes(big), "image/png").json()["results"][0]
    assert (large["width"], large["height"]) == (big.width, big.height)
    a, b = small["detections"][0], large["detections"][0]
    assert a["label"] == b["label"]
    np.testing.assert_allclose(b["box"], np.array(a["box"]) * [3, 2, 3, 2], atol=4.0)


def test_speech_answers_with_a_transcript(server, clip):
    _, url = server
    r = post(f"{url}/v1/speech", clip, "audio/wav")
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    wave, rate = sf.read(io.BytesIO(clip))
    assert isinstance(result["transcript"], str)
    assert result["duration_s"] == pytest.approx(len(wave) / rate, abs=1e-3)
    # Another sample rate is resampled, not refused.
    slow = wav_bytes(wave[::2], rate // 2)
    r8k = post(f"{url}/v1/speech", slow, "audio/x-wav")
    assert r8k.status_code == 200, r8k.text
    assert r8k.json()["results"][0]["duration_s"] == pytest.approx(len(wave) / rate, abs=1e-3)


def test_a_multipart_batch_answers_each_file_like_alone(server, photo, defect_image_file):
    _, url = server
    other = sorted(defect_image_file.parent.glob("*.png"))[1].read_bytes()
    files = [("file", (f"p{i}.png", data, "image/png")) for i, data in enumerate([photo, other])]
    r = requests.post(f"{url}/v1/defects", files=files, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["p0.png", "p1.png"]
    for data, got in zip([photo, other], results, strict=True):
        alone = post(f"{url}/v1/defects", data, "image/png").json()["results"][0]
        assert_same_detections(got["detections"], alone["detections"])


def test_both_runtimes_give_the_same_answers(base_config, start_server, photo, clip):
    from dataclasses import replace

    answers = {}
    for runtime in ("torch", "onnx"):
        with start_server(replace(base_config, runtime=runtime)) as (url, _):
            answers[runtime] = (
                post(f"{url}/v1/defects", photo, "image/png").json()["results"][0],
                post(f"{url}/v1/speech", clip, "audio/wav").json()["results"][0],
            )
    (d_torch, s_torch), (d_onnx, s_onnx) = answers["torch"], answers["onnx"]
    # Stated tolerance: boxes within 0.05 px, scores within 1e-3 (the export check's atol).
    assert_same_detections(d_torch["detections"], d_onnx["detections"], box_tol=0.05)
    assert s_torch == s_onnx


def assert_same_detections(a: list[dict], b: list[dict], box_tol: float = 0.02) -> None:
    assert len(a) == len(b)
    key = lambda d: (d["label"], *d["box"])  # noqa: E731
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert x["label"] == y["label"]
        np.testing.assert_allclose(x["box"], y["box"], atol=box_tol)
        assert abs(x["score"] - y["score"]) <= 1e-3


def test_concurrent_requests_are_batched_and_kept_apart(server_with, defect_image_file):
    photos = [p.read_bytes() for p in sorted(defect_image_file.parent.glob("*.png"))][:8] * 3
    with server_with(max_batch=8, max_wait_ms=20) as (url, _):
        alone = [post(f"{url}/v1/defects", p, "image/png").json() for p in photos[:8]]
        with ThreadPoolExecutor(24) as pool:
            together = list(pool.map(lambda p: post(f"{url}/v1/defects", p, "image/png"), photos))
        metrics = requests.get(f"{url}/metrics").text
    for i, r in enumerate(together):
        assert r.status_code == 200, r.text
        assert_same_detections(
            r.json()["results"][0]["detections"], alone[i % 8]["results"][0]["detections"]
        )
    batches = histogram(metrics, "liveml_batch_size", "defects")
    assert batches["count"] < len(photos) + 8, "concurrent requests never shared a model call"


def histogram(text: str, name: str, model: str) -> dict:
    out = {}
    for line in text.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f'{name}_{part}{{model="{model}"}}'):
                out[part] = float(line.split()[-1])
    return out


def test_concurrent_speech_clips_of_different_lengths_stay_apart(server_with, speech_wav_file):
    clips = [p.read_bytes() for p in sorted(speech_wav_file.parent.glob("*.wav"))][:6] * 2
    with server_with(max_batch=8, max_wait_ms=20) as (url, _):
        alone = [post(f"{url}/v1/speech", c, "audio/wav").json() for c in clips[:6]]
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(lambda c: post(f"{url}/v1/speech", c, "audio/wav"), clips))
    for i, r in enumerate(together):
        assert r.json()["results"] == alone[i % 6]["results"]


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small PNG whose header claims width x height pixels."""
    import struct
    import zlib

    data = bytearray(png_bytes(Image.new("RGB", (8, 8))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def bad_requests(photo: bytes, clip: bytes) -> list[tuple[str, str, bytes, str, int, str]]:
    """(id, task, body, content type, status, code) of each kind of bad input."""
    wave, rate = sf.read(io.BytesIO(clip), dtype="float32")
    nan = wave.copy()
    nan[100] = np.nan
    inf = wave.copy()
    inf[5] = np.inf
    return [
        ("corrupt-image", "defects", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png", 400, ""),
        ("truncated-image", "defects", photo[: len(photo) // 2], "image/png", 400, ""),
        ("empty-image", "defects", b"", "image/png", 400, "empty_body"),
        ("wrong-type", "defects", photo, "text/plain", 415, "unsupported_media_type"),
        ("bomb", "defects", bomb_png(), "image/png", 413, "image_too_large"),
        ("corrupt-audio", "speech", b"RIFF" + b"\x01" * 40, "audio/wav", 400, ""),
        ("truncated-audio-header", "speech", clip[:20], "audio/wav", 400, ""),
        ("empty-audio", "speech", b"", "audio/wav", 400, "empty_body"),
        ("zero-samples", "speech", wav_bytes(wave[:0], rate), "audio/wav", 422, "empty_audio"),
        ("nan", "speech", wav_bytes(nan, rate, "FLOAT"), "audio/wav", 422, "non_finite_audio"),
        ("inf", "speech", wav_bytes(inf, rate, "FLOAT"), "audio/wav", 422, "non_finite_audio"),
        ("image-to-speech", "speech", photo, "image/png", 415, "unsupported_media_type"),
        ("unknown-task", "faces", photo, "image/png", 404, "unknown_model"),
    ]


def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(live_server, photo, clip):
    for name, task, body, ctype, status, code in bad_requests(photo, clip):
        r = post(f"{live_server}/v1/{task}", body, ctype)
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        assert error["status"] == status and error["message"], name
        if code:
            assert error["code"] == code, (name, error)
        assert "fix" in error["message"].lower() or status == 404, (name, error["message"])
        good = post(f"{live_server}/v1/defects", photo, "image/png")
        assert good.status_code == 200, (name, good.text)
    assert post(f"{live_server}/v1/defects?min_score=2", photo, "image/png").status_code == 400


def test_a_bad_file_in_a_multipart_batch_is_named(live_server, photo):
    files = [("file", ("ok.png", photo, "image/png")), ("file", ("bad.png", b"nope", "image/png"))]
    r = requests.post(f"{live_server}/v1/defects", files=files, timeout=30)
    assert r.status_code == 400
    assert "file 2 (bad.png)" in r.json()["error"]["message"]


def test_oversized_uploads_are_refused_before_the_body_is_read(server_with, photo):
    with server_with(max_body_bytes=len(photo) + 1024) as (url, _):
        big = photo + b"\x00" * 8192
        r = post(f"{url}/v1/defects", big, "image/png")
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        # A chunked upload has no Content-Length: it is cut off once it passes the limit.
        chunked = requests.post(
            f"{url}/v1/defects",
            data=iter([big[i : i + 1024] for i in range(0, len(big), 1024)]),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert chunked.status_code == 413
        # A client that announces 10 GB gets its answer without sending them.
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/defects HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 10000000000\r\n\r\n" + b"\x89PNG"
            )
            start = time.monotonic()
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
            assert time.monotonic() - start < 5
        assert post(f"{url}/v1/defects", photo, "image/png").status_code == 200


def test_an_api_token_guards_the_model_endpoints(server_with, photo):
    with server_with(token="s3cret") as (url, _):
        assert post(f"{url}/v1/defects", photo, "image/png").status_code == 401
        wrong = {"Content-Type": "image/png", "Authorization": "Bearer nope"}
        r = requests.post(f"{url}/v1/defects", data=photo, headers=wrong, timeout=30)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(f"{url}/v1/models").status_code == 401
        right = {"Content-Type": "image/png", "Authorization": "Bearer s3cret"}
        assert requests.post(f"{url}/v1/defects", data=photo, headers=right).status_code == 200
        assert requests.get(f"{url}/healthz").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(server_with, clip):
    long_clip = wav_bytes(np.tile(sf.read(io.BytesIO(clip), dtype="float32")[0], 8), 16000)
    with server_with(max_batch=1, queue_size=1, max_wait_ms=0) as (url, _):
        with ThreadPoolExecutor(32) as pool:
            replies = list(
                pool.map(lambda _: post(f"{url}/v1/speech", long_clip, "audio/wav"), range(64))
            )
        statuses = {r.status_code for r in replies}
        assert statuses <= {200, 503} and {200, 503} <= statuses, statuses
        refused = next(r for r in replies if r.status_code == 503)
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert post(f"{url}/v1/speech", clip, "audio/wav").status_code == 200


def test_metrics_count_requests_errors_and_batches(live_server, photo):
    post(f"{live_server}/v1/defects", photo, "image/png")
    post(f"{live_server}/v1/defects", b"", "image/png")
    text = requests.get(f"{live_server}/metrics").text
    assert 'liveml_requests_total{model="defects",status="200"}' in text
    assert 'liveml_errors_total{code="empty_body",model="defects"}' in text
    assert histogram(text, "liveml_request_seconds", "defects")["count"] >= 1
    assert histogram(text, "liveml_batch_size", "defects")["count"] >= 1
    assert 'liveml_model_info{fingerprint="' in text


def test_inputs_are_captured_with_predictions_and_stay_bounded(server_with, photo, tmp_path):
    bound = 6 * len(photo)
    with server_with(capture_dir=str(tmp_path / "cap"), capture_max_bytes=bound) as (url, srv):
        answers = [post(f"{url}/v1/defects", photo, "image/png").json() for _ in range(20)]
        srv.capture.flush()
        assert srv.capture.stats["pruned"] > 0
    records = list(iter_captures(tmp_path / "cap", task="defects"))
    assert 1 <= len(records) < 20
    size = sum(f.stat().st_size for f in (tmp_path / "cap").rglob("*") if f.is_file())
    assert size <= bound
    latest = records[-1]
    assert latest["input_path"].read_bytes() == photo
    assert latest["prediction"]["detections"] == answers[-1]["results"][0]["detections"]
    assert latest["model"]["fingerprint"] == answers[-1]["model"]["fingerprint"]


def test_a_model_file_that_does_not_match_its_card_is_not_served(server_with, exports, tmp_path):
    import shutil

    tampered = shutil.copytree(exports["defects"], tmp_path / "defects")
    with open(tampered / "model.ts", "ab") as f:
        f.write(b"\x00")
    with server_with(models={"defects": str(tampered)}, ready=False) as (url, _):
        deadline = time.monotonic() + 30
        while (r := requests.get(f"{url}/readyz")).json()["error"]["code"] != "load_failed":
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 503 and "SHA-256" in r.json()["error"]["message"]
        refused = post(f"{url}/v1/defects", b"x", "image/png")
        assert refused.status_code == 503 and "dvc checkout" in refused.text
