"""Input decoding: every bad input gets its status and code, good ones their arrays.

All inputs are built in memory with the real libraries (PIL, soundfile, numpy).
"""

from __future__ import annotations

import io
import resource
import struct
import time
import warnings
import zlib
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from liveml.serving.inputs import (
    AUDIO_TYPES,
    IMAGE_TYPES,
    MAX_CHANNELS,
    MAX_JPEG_SCANS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    InputError,
    check_media_type,
    decode_image,
    decode_wav,
    resample_ratio,
)

BIG = 10**8  # a max_pixels that never bites


def rejects(status: int, code: str, fn, *args, **kwargs) -> InputError:
    """Call `fn`, expecting an InputError with this status and code and a fix in its message."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert (err.status, err.code) == (status, code), err.message
    assert "fix:" in err.message
    return err


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", fmt="WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_input_error_carries_status_code_and_message():
    err = InputError(413, "image_too_large", "too big; fix: shrink it")
    assert (err.status, err.code, err.message) == (
        413,
        "image_too_large",
        "too big; fix: shrink it",
    )
    assert str(err) == "too big; fix: shrink it"
    assert isinstance(err, Exception)


def test_accepted_types():
    assert IMAGE_TYPES == {"image/jpeg": "JPEG", "image/png": "PNG"}
    assert {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"} == AUDIO_TYPES


# --- check_media_type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "", "image/png", "IMAGE/JPEG", "image/png; charset=binary", "application/octet-stream"],
)
def test_media_type_accepted(content_type):
    check_media_type(content_type, IMAGE_TYPES, "defects")


@pytest.mark.parametrize("content_type", ["audio/x-wav", "Audio/Wav; codecs=1", None])
def test_audio_media_type_accepted(content_type):
    check_media_type(content_type, AUDIO_TYPES, "speech")


def test_media_type_rejected_lists_types_and_how_to_send():
    err = rejects(415, "unsupported_media_type", check_media_type, "image/gif", IMAGE_TYPES, "x")
    assert "image/gif" in err.message
    assert "image/jpeg, image/png" in err.message
    assert "curl --data-binary @photo.png -H 'Content-Type: image/png'" in err.message


def test_audio_media_type_rejected():
    err = rejects(415, "unsupported_media_type", check_media_type, "audio/mpeg", AUDIO_TYPES, "x")
    assert "Content-Type: audio/wav" in err.message


# --- decode_image: good inputs ------------------------------------------------------------


def test_png_round_trips_exactly():
    pixels = noise(5, 7)
    out = decode_image(encode(Image.fromarray(pixels), "PNG"), max_pixels=BIG)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_decodes_to_rgb():
    out = decode_image(encode(Image.new("RGB", (16, 8), (200, 30, 40)), "JPEG"), max_pixels=BIG)
    assert out.shape == (8, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (200, 30, 40)).max() <= 4


def _palette_with_alpha() -> Image.Image:
    im = Image.new("P", (4, 3), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.info["transparency"] = bytes([0, 128])  # per-entry alpha: a tRNS palette chunk
    return im


@pytest.mark.parametrize(
    ("image", "fmt", "rgb"),
    [
        (Image.new("L", (4, 3), 90), "PNG", (90, 90, 90)),
        (Image.new("LA", (4, 3), (90, 10)), "PNG", (90, 90, 90)),
        (Image.new("RGBA", (4, 3), (255, 0, 0, 128)), "PNG", (255, 0, 0)),
        (Image.new("RGBA", (4, 3), (10, 200, 30, 0)), "PNG", (10, 200, 30)),
        (Image.new("P", (4, 3), 0), "PNG", (0, 0, 0)),
        (_palette_with_alpha(), "PNG", (10, 200, 30)),
        (Image.new("1", (4, 3), 1), "PNG", (255, 255, 255)),
        (Image.fromarray(np.full((3, 4), 0x8000, np.uint16)), "PNG", (128, 128, 128)),
        (Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
    ],
    ids=["L", "LA", "RGBA", "RGBA-clear", "P", "P-alpha", "1", "I;16", "CMYK"],
)
def test_any_mode_becomes_rgb(image, fmt, rgb):
    data = encode(image, fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL conversion warnings in the server's log
        out = decode_image(data, max_pixels=BIG)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= (3 if fmt == "JPEG" else 0)


def test_jpeg_exif_orientation_applied():
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = (255, 0, 0)  # left half red
    pixels[:, 8:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(data, max_pixels=BIG)
    assert out.shape == (16, 8, 3)  # portrait now
    assert out[2, 4, 0] > 200 and out[2, 4, 2] < 60  # the left (red) half is on top
    assert out[13, 4, 2] > 200 and out[13, 4, 0] < 60


def test_multi_picture_jpeg_gives_its_primary_picture():
    # Phone cameras write MPO: a JPEG with more pictures appended.
    first = Image.new("RGB", (16, 8), (255, 0, 0))
    data = encode(first, "MPO", save_all=True, append_images=[Image.new("RGB", (16, 8), "blue")])
    out = decode_image(data, max_pixels=BIG)
    assert out.shape == (8, 16, 3)
    assert np.abs(out.astype(int) - (255, 0, 0)).max() <= 3


def test_image_at_the_pixel_limit_is_accepted():
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    assert decode_image(data, max_pixels=100).shape == (10, 10, 3)


# --- decode_image: bad inputs -------------------------------------------------------------


def test_empty_image_body():
    rejects(400, "empty_body", decode_image, b"", max_pixels=BIG)


@pytest.mark.parametrize("data", [b"hello, this is not an image at all", b"\x00" * 64, b"\x89PN"])
def test_unidentifiable_bytes_are_corrupt(data):
    rejects(400, "corrupt_image", decode_image, data, max_pixels=BIG)


@pytest.mark.parametrize(("fmt", "mode"), [("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB")])
def test_other_image_formats_are_unsupported(fmt, mode):
    data = encode(Image.new(mode, (4, 4)), fmt)
    err = rejects(415, "unsupported_media_type", decode_image, data, max_pixels=BIG)
    assert fmt in err.message


def test_image_over_the_pixel_limit():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    err = rejects(413, "image_too_large", decode_image, data, max_pixels=9999)
    assert "100x100" in err.message


def _patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """`png` with its IHDR claiming width x height, CRC fixed so parsers believe it."""
    ihdr = bytearray(png[8:33])  # length, b"IHDR", 13 bytes of fields, CRC
    assert ihdr[4:8] == b"IHDR"
    ihdr[8:16] = struct.pack(">II", width, height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return png[:8] + bytes(ihdr) + png[33:]


def _patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    sof = jpeg.index(b"\xff\xc0")  # baseline start-of-frame: marker, length, precision, h, w
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decompression_bomb_refused_from_the_header(fmt):
    small = encode(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
    if fmt == "PNG":
        bomb = _patch_png_size(small, 50000, 50000)  # 7.5 GB of RGB if decoded
    else:
        bomb = _patch_jpeg_size(small, 65000, 65000)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not fire
        err = rejects(413, "image_too_large", decode_image, bomb, max_pixels=4096 * 4096)
    assert time.perf_counter() - start < 0.5
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 50 * 1024
    assert ("50000x50000" if fmt == "PNG" else "65000x65000") in err.message


def test_decompression_bomb_over_pils_own_limit_is_ours_to_refuse():
    # 10000x10000 is over PIL's MAX_IMAGE_PIXELS and under 2x it: Image.open would warn.
    bomb = _patch_png_size(encode(Image.new("RGB", (8, 8)), "PNG"), 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rejects(413, "image_too_large", decode_image, bomb, max_pixels=4096 * 4096)


def test_zero_size_image():
    data = _patch_png_size(encode(Image.new("RGB", (8, 8)), "PNG"), 0, 8)
    rejects(400, "corrupt_image", decode_image, data, max_pixels=BIG)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True})],
    ids=["png", "jpeg", "progressive-jpeg"],
)
@pytest.mark.parametrize("load_truncated", [False, True], ids=["pil-default", "pil-lenient"])
def test_truncated_image_is_corrupt(fmt, options, load_truncated, monkeypatch):
    # Some other library in the process may have turned PIL's lenient mode on.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    data = encode(Image.fromarray(noise(64, 64)), fmt, **options)
    for cut in (len(data) // 2, len(data) - 2):  # half of it, or all but the end marker
        rejects(400, "corrupt_image", decode_image, data[:cut], max_pixels=BIG)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated


def test_corrupt_png_pixel_data():
    data = bytearray(encode(Image.fromarray(noise(16, 16)), "PNG"))
    idat = data.index(b"IDAT") + 4
    data[idat : idat + 2] = b"\xff\xff"  # a broken zlib header
    rejects(400, "corrupt_image", decode_image, bytes(data), max_pixels=BIG)


def test_pil_globals_untouched():
    limit, lenient = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    decode_image(encode(Image.new("RGB", (4, 4)), "PNG"), max_pixels=BIG)
    with pytest.raises(InputError):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, max_pixels=BIG)
    assert (limit, lenient) == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


# --- decode_wav: good inputs --------------------------------------------------------------


def test_pcm16_mono_round_trips():
    samples = sine(440, 16000, 0.25)
    out = decode_wav(wav(samples), sample_rate=16000, max_seconds=1)
    assert out.dtype == np.float32 and out.ndim == 1 and len(out) == len(samples)
    np.testing.assert_allclose(out, samples, atol=1 / 32768)


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_24"), ("WAV", "PCM_U8"), ("WAVEX", "PCM_16")]
)
def test_other_wav_encodings(fmt, subtype):
    samples = sine(440, 16000, 0.1)
    out = decode_wav(wav(samples, fmt=fmt, subtype=subtype), sample_rate=16000, max_seconds=1)
    np.testing.assert_allclose(out, samples, atol=1 / 64)


def test_float_wav_round_trips_exactly():
    samples = sine(300, 16000, 0.1, amp=0.9)
    out = decode_wav(wav(samples, subtype="FLOAT"), sample_rate=16000, max_seconds=1)
    np.testing.assert_array_equal(out, samples)


def test_stereo_is_averaged_to_mono():
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    out = decode_wav(wav(stereo, subtype="FLOAT"), sample_rate=16000, max_seconds=1)
    assert out.shape == (800,)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)


def test_float_samples_beyond_full_scale_are_clipped():
    samples = np.array([2.0, -3.0, 0.5, -0.25], np.float32)
    out = decode_wav(wav(samples, subtype="FLOAT"), sample_rate=16000, max_seconds=1)
    np.testing.assert_array_equal(out, [1.0, -1.0, 0.5, -0.25])


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_rates_resampled(rate):
    samples = sine(440, rate, 0.5)
    out = decode_wav(wav(samples, rate), sample_rate=16000, max_seconds=1)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 8000) <= 1  # 0.5 s at 16 kHz
    assert abs(_peak_hz(out, 16000) - 440) < 5
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("rate", [4001, 16001, 191999])
def test_odd_rates_resampled_fast(rate):
    # gcd(rate, 16000) == 1: the exact ratio would need a filter of millions of taps.
    samples = sine(440, rate, 0.5)
    start = time.perf_counter()
    out = decode_wav(wav(samples, rate), sample_rate=16000, max_seconds=1)
    assert time.perf_counter() - start < 0.5
    assert abs(len(out) - 8000) <= 8
    assert abs(_peak_hz(out, 16000) - 440) < 5


def test_truncated_wav_decodes_what_is_there():
    samples = sine(440, 16000, 1.0)
    data = wav(samples)
    out = decode_wav(data[: len(data) // 2], sample_rate=16000, max_seconds=2)
    assert 7900 < len(out) < 8000
    np.testing.assert_allclose(out, samples[: len(out)], atol=1 / 32768)


def test_streamed_wav_with_placeholder_sizes_decodes():
    # Writers that stream to a pipe cannot go back to fill in the sizes.
    samples = sine(440, 16000, 0.1)
    data = wav(samples)
    at = data.index(b"data") + 4
    data = data[:4] + b"\xff" * 4 + data[8:at] + b"\xff" * 4 + data[at + 4 :]
    out = decode_wav(data, sample_rate=16000, max_seconds=1)
    np.testing.assert_allclose(out, samples, atol=1 / 32768)


def test_audio_at_the_duration_limit_is_accepted():
    out = decode_wav(wav(np.zeros(16000, np.float32)), sample_rate=16000, max_seconds=1)
    assert len(out) == 16000


# --- decode_wav: bad inputs ---------------------------------------------------------------


def test_empty_audio_body():
    rejects(400, "empty_body", decode_wav, b"", sample_rate=16000, max_seconds=10)


@pytest.mark.parametrize("data", [b"definitely not a wav file" * 4, b"RIFF\x00\x00\x00\x00WAVE"])
def test_garbage_audio_is_corrupt(data):
    rejects(400, "corrupt_audio", decode_wav, data, sample_rate=16000, max_seconds=10)


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_other_audio_formats_are_unsupported(fmt, subtype):
    data = wav(sine(440, 16000, 0.1), fmt=fmt, subtype=subtype)
    err = rejects(
        415, "unsupported_media_type", decode_wav, data, sample_rate=16000, max_seconds=10
    )
    assert fmt in err.message


@pytest.mark.parametrize("cut", [None, 44], ids=["no-frames", "header-only"])
def test_wav_without_samples(cut):
    data = wav(np.zeros(0 if cut is None else 100, np.float32))
    data = data[:cut] if cut else data
    rejects(422, "empty_audio", decode_wav, data, sample_rate=16000, max_seconds=10)


def test_audio_too_long():
    data = wav(np.zeros(8000 * 30, np.float32), 8000)  # 30 s
    err = rejects(413, "audio_too_long", decode_wav, data, sample_rate=16000, max_seconds=10)
    assert "30.0 s" in err.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    data = wav(np.array([0.0, bad, 0.5], np.float32), subtype="FLOAT")
    rejects(422, "non_finite_audio", decode_wav, data, sample_rate=16000, max_seconds=10)


# --- hostile headers: refused from the header, in bounded time and memory -----------------


def _patch_wav_rate(data: bytes, rate: int) -> bytes:
    """`data` (a plain WAV) with its fmt chunk claiming `rate` Hz (and the matching byte rate)."""
    fmt = data.index(b"fmt ") + 8  # format tag, channels, sample rate, byte rate, block align
    (block,) = struct.unpack_from("<H", data, fmt + 12)
    return data[: fmt + 4] + struct.pack("<II", rate, rate * block) + data[fmt + 12 :]


def test_a_2kb_wav_claiming_16_mhz_is_refused_at_once():
    # Issue 14: this header made the resampler build a 335-million-tap filter (18.6 s of a
    # frozen server, memory 0.87 -> 6.1 GB, then a 500).
    data = _patch_wav_rate(wav(sine(440, 16000, 0.06)), 16_777_259)
    assert len(data) < 2100 and sf.info(io.BytesIO(data)).samplerate == 16_777_259
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    err = rejects(422, "bad_sample_rate", decode_wav, data, sample_rate=16000, max_seconds=30)
    assert time.perf_counter() - start < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 20 * 1024  # KiB
    assert "16777259 Hz" in err.message and "4000..192000 Hz" in err.message


@pytest.mark.parametrize("rate", [1, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 2**31 - 1])
def test_sample_rates_outside_the_documented_range_are_refused(rate):
    data = _patch_wav_rate(wav(sine(440, 16000, 0.05)), rate)
    rejects(422, "bad_sample_rate", decode_wav, data, sample_rate=16000, max_seconds=30)


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE])
def test_the_ends_of_the_range_are_accepted(rate):
    out = decode_wav(wav(sine(440, rate, 0.25), rate), sample_rate=16000, max_seconds=1)
    assert abs(len(out) - 4000) <= 1


def test_resampling_ratios_stay_small_and_close():
    # Every rate of the range against the usual model rates: a filter of at most ~20000 taps,
    # a pitch/duration error under 0.1 %.
    for target in (8000, 16000, 22050, 44100, 48000):
        for orig in range(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE + 1, 997):
            ratio = resample_ratio(orig, target)
            assert max(ratio.numerator, ratio.denominator) <= 1000, (orig, target)
            assert abs(float(ratio) * orig / target - 1) < 1e-3, (orig, target, ratio)
    assert resample_ratio(44100, 16000) == Fraction(160, 441)  # exact when small enough


def test_too_many_channels_are_refused_before_reading():
    data = wav(np.zeros((100, MAX_CHANNELS + 1), np.float32))
    err = rejects(422, "too_many_channels", decode_wav, data, sample_rate=16000, max_seconds=1)
    assert str(MAX_CHANNELS + 1) in err.message
    many = np.tile(sine(440, 16000, 0.1)[:, None], (1, MAX_CHANNELS))
    out = decode_wav(wav(many, subtype="FLOAT"), sample_rate=16000, max_seconds=1)
    np.testing.assert_allclose(out, many[:, 0], atol=1e-6)


def test_long_audio_is_read_in_blocks_with_the_same_result():
    # Longer than one read block, stereo: block-wise averaging gives the whole-file result.
    stereo = np.stack([sine(440, 16000, 5.0), sine(220, 16000, 5.0, amp=0.3)], axis=1)
    out = decode_wav(wav(stereo, subtype="FLOAT"), sample_rate=16000, max_seconds=10)
    np.testing.assert_array_equal(out, stereo.mean(axis=1, dtype=np.float32))


def test_non_finite_samples_in_a_later_block():
    samples = np.zeros(100_000, np.float32)
    samples[-1] = np.nan
    data = wav(samples, subtype="FLOAT")
    rejects(422, "non_finite_audio", decode_wav, data, sample_rate=16000, max_seconds=10)


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding():
    # Each scan of a progressive JPEG re-walks the whole image: repeating a small one
    # thousands of times makes a few MB cost seconds of CPU.
    data = encode(Image.fromarray(noise(64, 64)), "JPEG", progressive=True)
    end = data.rindex(b"\xff\xd9")
    last_scan = data[data.rindex(b"\xff\xda") : end]
    hostile = data[:end] + last_scan * MAX_JPEG_SCANS + b"\xff\xd9"
    err = rejects(400, "corrupt_image", decode_image, hostile, max_pixels=BIG)
    assert f"over {MAX_JPEG_SCANS} scans" in err.message
