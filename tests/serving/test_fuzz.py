"""Fuzzing the upload decoders (issue 14): arbitrary bytes and mutated valid PNG, JPEG and WAV
files either decode within bounds or raise InputError; never another exception, never more
than a bounded time or memory.

A short run (a few hundred examples per decoder) is in the default suite; the long run is
`pytest -m slow tests/serving/test_fuzz.py`. Hypothesis shrinks any failure to a minimal input.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import struct
import time
import warnings

import numpy as np
import pytest
import scipy.signal  # noqa: F401  the decoder imports it on first use: not inside a timed call
import soundfile as sf
from PIL import Image

from liveml.serving.inputs import InputError, decode_image, decode_wav

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Examples per decoder: the default suite's run, and the slow run's (LIVEML_FUZZ_EXAMPLES=N
# for a longer one).
FAST, LONG = 200, int(os.environ.get("LIVEML_FUZZ_EXAMPLES", "20000"))
MAX_PIXELS = 1024 * 1024
RATE, MAX_SECONDS = 16000, 5.0
# Per call; every input here is a few KB, so a legitimate decode takes milliseconds.
MAX_CALL_S = 2.0
# Peak memory growth over a whole run, KiB.
MAX_GROWTH_KIB = 300 * 1024


def _image(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int, subtype: str, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    palette = rgb.convert("P")
    palette.info["transparency"] = 3
    return [
        _image(rgb, "PNG"),
        _image(rgb.convert("RGBA"), "PNG"),
        _image(palette, "PNG"),
        _image(Image.fromarray(np.full((6, 5), 40000, np.uint16)), "PNG"),
        _image(rgb.convert("L"), "PNG"),
        _image(rgb, "JPEG", quality=80),
        _image(rgb, "JPEG", progressive=True),
        _image(rgb.convert("CMYK"), "JPEG"),
        _image(rgb, "JPEG", exif=_exif()),
    ]


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def wav_seeds() -> list[bytes]:
    t = np.arange(800) / 8000
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([mono, -mono], axis=1)
    seeds = [
        _wav(mono, 16000, "PCM_16"),
        _wav(stereo, 44100, "FLOAT"),
        _wav(mono, 8000, "PCM_U8"),
        _wav(mono, 22050, "PCM_24", "WAVEX"),
        _wav(mono, 8000, "ULAW"),
        _wav(mono, 16000, "IMA_ADPCM"),
        _wav(stereo, 16000, "MS_ADPCM"),
        _wav(mono, 8000, "GSM610"),
    ]
    with contextlib.suppress(sf.LibsndfileError, RuntimeError):  # no MP3 encoder built in
        seeds.append(_wav(mono, 16000, "MPEG_LAYER_III"))
    return seeds


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 16_777_259]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file with a few random edits: flipped bytes, cut, inserted or repeated spans, and
    header integers overwritten with extreme values."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "int", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        elif op == "int":
            fmt = draw(st.sampled_from(["<I", ">I", "<H", ">H"]))
            value = draw(st.sampled_from(INTERESTING)) & (0xFFFF if "H" in fmt else 0xFFFFFFFF)
            data[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
        elif op == "repeat" and data:
            end = draw(st.integers(at, min(len(data), at + 256)))
            data[end:end] = data[at:end] * draw(st.integers(1, 8))
    return bytes(data)


def arbitrary(magic: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, bare or after a format's magic bytes (so the format's parser runs)."""
    return st.one_of(
        st.binary(max_size=2048),
        st.builds(lambda m, b: m + b, st.sampled_from(magic), st.binary(max_size=2048)),
    )


IMAGE_MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"]
WAV_MAGIC = [b"RIFF\x24\x08\x00\x00WAVEfmt ", b"RIFF\xff\xff\xff\xffWAVE", b"RF64"]


def images() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(image_seeds()), arbitrary(IMAGE_MAGIC))


def wavs() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(wav_seeds()), arbitrary(WAV_MAGIC))


def bounded(decode, data: bytes) -> np.ndarray | None:
    """decode(data): InputError (None) or an array; anything else, or a slow call, fails."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF: not a failure
            out = decode(data)
    except InputError as e:
        assert 400 <= e.status < 500 and e.code and "fix" in e.message.lower(), e.message
        out = None
    took = time.perf_counter() - start
    assert took < MAX_CALL_S, f"{took:.2f} s on {len(data)} bytes"
    return out


def check_image(data: bytes) -> None:
    out = bounded(lambda d: decode_image(d, max_pixels=MAX_PIXELS), data)
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert out.shape[0] * out.shape[1] <= MAX_PIXELS


def check_wav(data: bytes) -> None:
    out = bounded(lambda d: decode_wav(d, sample_rate=RATE, max_seconds=MAX_SECONDS), data)
    if out is not None:
        assert out.dtype == np.float32 and out.ndim == 1 and len(out) > 0
        assert len(out) <= MAX_SECONDS * RATE * 1.01 + 1
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def fuzz(strategy, check, examples: int) -> int:
    """Run a hypothesis test of `check` over `strategy`, `examples` long; returns the number of
    inputs checked."""
    calls = []

    @settings(
        max_examples=examples,
        deadline=None,  # timed in `bounded`, which also fails on a slow first run
        database=None,
        derandomize=examples == FAST,  # the default suite runs the same inputs each time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def run(data: bytes) -> None:
        calls.append(len(data))
        check(data)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < MAX_GROWTH_KIB
    assert len(calls) >= examples
    print(f"fuzz: {len(calls)} inputs, {sum(calls)} bytes")  # shown with -s
    return len(calls)


def test_the_seeds_decode():
    # Mutations start from files that decode: the fuzzer explores near valid input.
    for data in image_seeds():
        assert decode_image(data, max_pixels=MAX_PIXELS).size
    for data in wav_seeds():
        assert decode_wav(data, sample_rate=RATE, max_seconds=MAX_SECONDS).size


def test_fuzz_decode_image():
    fuzz(images(), check_image, FAST)


def test_fuzz_decode_wav():
    fuzz(wavs(), check_wav, FAST)


@pytest.mark.slow
def test_fuzz_decode_image_long():
    fuzz(images(), check_image, LONG)


@pytest.mark.slow
def test_fuzz_decode_wav_long():
    fuzz(wavs(), check_wav, LONG)


# --- the tasks' own decode, through the predictor each served model gets --------------------


@pytest.fixture(scope="module")
def predictors(exports):
    from liveml.serving.config import ServeConfig
    from liveml.serving.predictors import build_predictor
    from liveml.serving.runtime import load_runtime

    out = []
    for task, export_dir in exports.items():
        limits = ServeConfig(models={task: str(export_dir)}).limits
        out.append(build_predictor(load_runtime(export_dir, "onnx"), limits))
    return out


def predictor_inputs(predictor) -> st.SearchStrategy[bytes]:
    kinds = []
    if any(t.startswith("image/") for t in predictor.media_types):
        kinds.append(images())
    if any(t.startswith("audio/") for t in predictor.media_types):
        kinds.append(wavs())
    return st.one_of(*kinds, st.binary(max_size=1024))


def check_predictor(predictor):
    def check(data: bytes) -> None:
        prepared = bounded(lambda d: predictor.decode(d, None), data)
        if prepared is not None:
            assert np.isfinite(prepared.tensor).all()

    return check


@pytest.mark.parametrize("examples", [FAST, pytest.param(LONG // 4, marks=pytest.mark.slow)])
def test_fuzz_each_tasks_decode(predictors, examples):
    for predictor in predictors:
        fuzz(predictor_inputs(predictor), check_predictor(predictor), examples)
