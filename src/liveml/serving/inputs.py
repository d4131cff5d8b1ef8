"""Request-body decoding for the prediction server: image and WAV bytes to model-ready arrays.

Every rejection is an `InputError` carrying the HTTP status, a machine-readable code and a
message naming the problem and the fix, so the server answers bad input with a clear JSON
error and keeps serving. No HTTP here, and no torch: the module must stay cheap to import.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Collection
from fractions import Fraction

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin


class InputError(Exception):
    """Bad request input: HTTP `status`, machine `code`, and a message naming the problem
    and the fix."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


IMAGE_TYPES: dict[str, str] = {"image/jpeg": "JPEG", "image/png": "PNG"}
AUDIO_TYPES: frozenset[str] = frozenset(
    {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}
)

# The example in a 415 message: the first of these that the endpoint accepts.
_EXAMPLE_FILES = {"image/png": "photo.png", "image/jpeg": "photo.jpg", "audio/wav": "clip.wav"}


def _how_to_send(accepted: Collection[str]) -> str:
    types = ", ".join(sorted(accepted))
    for media_type, name in _EXAMPLE_FILES.items():
        if media_type in accepted:
            return (
                f"send one of {types}, e.g. "
                f"`curl --data-binary @{name} -H 'Content-Type: {media_type}'`"
            )
    return f"send one of {types}"


def check_media_type(content_type: str | None, accepted: Collection[str], what: str) -> None:
    """Raise 415 unless `content_type` names an accepted type.

    Parameters (`; charset=...`) and case are ignored. A missing type and
    `application/octet-stream` pass: many clients send one of those for any file, and the
    decoders sniff the bytes anyway.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not media_type or media_type == "application/octet-stream":
        return
    if media_type in {t.lower() for t in accepted}:
        return
    raise InputError(
        415,
        "unsupported_media_type",
        f"the {what} model does not take Content-Type {media_type!r}; "
        f"fix: {_how_to_send(accepted)}",
    )


# --- images -------------------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-scan markers a JPEG may hold. Encoders write 1 (baseline) to about 12 (progressive);
# each scan of a progressive JPEG re-walks the whole image, so a body of thousands of tiny
# scans costs minutes of CPU. The count is an upper bound (an EXIF thumbnail adds its own).
MAX_JPEG_SCANS = 256
_IMAGE_FIX = "fix: " + _how_to_send(IMAGE_TYPES)


def _corrupt_image(problem: str) -> InputError:
    return InputError(400, "corrupt_image", f"{problem}; fix: re-export the photo as JPEG or PNG")


def _other_image_format(head: bytes) -> str | None:
    """The name of the non-JPEG/PNG format whose magic bytes `head` starts with, if any.

    Only the plugins' signature checks run, never their parsers: a parser may warn or
    allocate on a hostile header, and formats without a signature (TGA) would otherwise
    "identify" arbitrary garbage.
    """
    Image.init()  # registers every plugin; a no-op after the first call
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(head):
                return name
        except Exception:  # nosec B112
            continue  # not this format: some checks index past the end of a short body
    return None


def _is_truncated(data: bytes, im: Image.Image, scan_start: int) -> bool:
    """Whether the file ends before its last chunk/marker, checked on the raw bytes.

    PIL reports truncation only while the process-wide `ImageFile.LOAD_TRUNCATED_IMAGES` is
    off, and any library in the process may turn it on; this check does not depend on it.
    """
    if im.format == "PNG":
        pos = len(_PNG_MAGIC)
        while pos + 8 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, pos)
            pos += 12 + length  # length, type, data, CRC
            if kind == b"IEND":
                return pos > len(data)
        return True
    # JPEG: entropy-coded data never holds FF D9 (a data FF is stuffed as FF 00), so an
    # end-of-image marker after the first scan starts means the scans are all there.
    return data.find(b"\xff\xd9", scan_start) < 0


# Pixels copied out of PIL at a time. Copying a whole 4096 x 4096 image holds the GIL for
# ~30 ms, stalling every other thread (the server's event loop included); a strip takes ~2 ms.
_STRIP_PIXELS = 1 << 20


def _array(im: Image.Image) -> np.ndarray:
    """A writable copy of `im`'s pixels as an array, a strip of rows at a time."""
    width, height = im.size
    rows = max(1, _STRIP_PIXELS // width)
    if rows >= height:
        return np.array(im)
    first = np.asarray(im.crop((0, 0, width, rows)))
    out = np.empty((height, *first.shape[1:]), first.dtype)
    out[:rows] = first
    for top in range(rows, height, rows):
        out[top : top + rows] = np.asarray(im.crop((0, top, width, min(height, top + rows))))
    return out


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode.startswith("I"):
        # 16-bit greyscale: convert("RGB") clips every value over 255 to white; keep the
        # top 8 bits instead.
        grey = (np.clip(_array(im), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        if "transparency" in im.info:
            # Through RGBA: converting a palette with per-entry alpha straight to RGB warns.
            im = im.convert("RGBA")
        # Alpha is dropped, not composited: the model sees the colours the photo recorded.
        im = im.convert("RGB")
    return _array(im).astype(np.uint8, copy=False)


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> HxWx3 uint8 RGB array (EXIF orientation applied to JPEGs).

    The format is sniffed from the bytes and the size read from the header, and images over
    `max_pixels` are refused before a pixel is decoded. PIL's plugin classes are used
    directly instead of `Image.open`: its decompression-bomb check warns or raises against a
    process-wide limit before we could apply ours; here `max_pixels` is the bomb defence, and
    MAX_JPEG_SCANS bounds a progressive JPEG's work.
    Any mode (L, LA, P, RGBA, CMYK, 16-bit) comes out as RGB; alpha is dropped.
    """
    if not data:
        raise InputError(400, "empty_body", f"the request body is empty; {_IMAGE_FIX}")
    if data.startswith(_PNG_MAGIC):
        plugin = PngImagePlugin.PngImageFile
    elif data.startswith(_JPEG_MAGIC):
        # JpegImageFile, not jpeg_factory: a multi-picture (MPO) file from a phone camera
        # decodes as its primary picture instead of going through the MPO plugin.
        plugin = JpegImagePlugin.JpegImageFile
    else:
        other = _other_image_format(data[:16])
        if other is not None:
            raise InputError(
                415,
                "unsupported_media_type",
                f"the body is a {other} image, and only JPEG and PNG are decoded; "
                f"fix: convert it to PNG or JPEG and {_how_to_send(IMAGE_TYPES)}",
            )
        raise _corrupt_image(
            "the body is not a JPEG or PNG image (its first bytes match no known image format)"
        )

    if plugin is JpegImagePlugin.JpegImageFile and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise _corrupt_image(
            f"the JPEG holds over {MAX_JPEG_SCANS} scans (normal photos have at most a dozen)"
        )
    fp = io.BytesIO(data)
    try:
        im = plugin(fp)
    except Exception as e:
        # Hostile bytes can make a header parser fail in many ways; all mean a bad file.
        # PIL's own wording stays in the chain for the log, out of the client's message.
        raise _corrupt_image(f"the {plugin.format} header cannot be read") from e
    scan_start = fp.tell()  # for a JPEG: just past the first start-of-scan header
    with im:
        width, height = im.size
        if width < 1 or height < 1:
            raise _corrupt_image(f"the image is {width}x{height} pixels, so it has no pixels")
        if width * height > max_pixels:
            raise InputError(
                413,
                "image_too_large",
                f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels}; fix: downscale it (e.g. to 2048 px on the long side) and retry",
            )
        if _is_truncated(data, im, scan_start):
            raise _corrupt_image(f"the {im.format} data ends early (a cut-off upload?)")
        try:
            im.load()
        except Exception as e:
            raise _corrupt_image(f"the {im.format} pixel data is corrupt") from e
        if im.format == "JPEG":
            # Malformed EXIF: the pixels are fine, so serve them unrotated.
            with contextlib.suppress(Exception):
                ImageOps.exif_transpose(im, in_place=True)
        return _to_rgb(im)


# --- audio --------------------------------------------------------------------------------

_WAV_FORMATS = frozenset({"WAV", "WAVEX"})
_AUDIO_FIX = (
    "fix: send a 16-bit PCM or float WAV, mono or stereo, at 4-192 kHz, e.g. "
    "`curl --data-binary @clip.wav -H 'Content-Type: audio/wav'`"
)
# Sample rates a WAV may declare: 4 kHz (narrow-band telephony) to 192 kHz (studio). Anything
# outside is a broken or hostile header: a claimed 16,777,259 Hz once made the resampler build a
# 335-million-tap filter for a 2 KB file.
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 192_000
# More channels than any recording setup sends to an audio model; also bounds a read block.
MAX_CHANNELS = 16
# Frames read (and averaged to mono) at a time: memory stays at the mono output plus one block,
# whatever the channel count.
_BLOCK_FRAMES = 65_536
# resample_poly's filter has about 20 * max(up, down) taps; both terms are kept at or under this
# (an odd rate such as 16001 Hz would otherwise need millions of taps).
_MAX_RATIO_TERM = 1000


def resample_ratio(orig: int, target: int) -> Fraction:
    """up/down for resampling `orig` Hz to `target` Hz, with both terms <= _MAX_RATIO_TERM.

    Exact when the reduced ratio is small enough; otherwise the nearest such fraction, which
    for any two rates in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] is off by under 0.1 % (a pitch and
    duration change far below what a listener, or the model, notices).
    """
    ratio = Fraction(target, orig)
    if max(ratio.numerator, ratio.denominator) <= _MAX_RATIO_TERM:
        return ratio
    if ratio >= 1:  # bound the larger term, the numerator: approximate the inverse
        return 1 / (1 / ratio).limit_denominator(_MAX_RATIO_TERM)
    return ratio.limit_denominator(_MAX_RATIO_TERM)


def _resample(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    # Imported here: scipy.signal adds 0.3-2 s to import time, and most clients send the
    # model's own rate already.
    from scipy.signal import resample_poly

    ratio = resample_ratio(orig, target)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32, copy=False)


def _reason(e: sf.SoundFileError) -> str:
    # libsndfile's own words ("Format not recognised."), without soundfile's prefix naming
    # the BytesIO object.
    return getattr(e, "error_string", None) or str(e)


def _non_finite() -> InputError:
    return InputError(
        422,
        "non_finite_audio",
        "the WAV has NaN or infinite samples; fix: send finite samples in [-1, 1], or "
        "re-export the recording as 16-bit PCM WAV, which cannot hold any others",
    )


def decode_wav(data: bytes, *, sample_rate: int, max_seconds: float) -> np.ndarray:
    """WAV bytes -> mono float32 1-D array in [-1, 1] at `sample_rate`.

    Channels are averaged, float samples clipped to [-1, 1], and other rates resampled
    (polyphase, scipy's resample_poly, see `resample_ratio`). Everything bounding the work is
    checked on the header, before a sample is read: the rate (MIN_SAMPLE_RATE..MAX_SAMPLE_RATE,
    else 422 "bad_sample_rate"), the channels (<= MAX_CHANNELS) and the duration
    (<= max_seconds); samples are then read a block at a time.

    A truncated WAV (the header promises more frames than the body holds) is decoded as far
    as it goes, not refused: libsndfile caps an over-claimed data size at the bytes present,
    and that same rule reads WAVs from streaming writers, whose size fields hold 0xFFFFFFFF
    placeholders. A header with no samples after it is 422 "empty_audio".
    """
    if not data:
        raise InputError(400, "empty_body", f"the request body is empty; {_AUDIO_FIX}")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except sf.SoundFileError as e:
        raise InputError(
            400,
            "corrupt_audio",
            f"the body is not a readable WAV file ({_reason(e)}); {_AUDIO_FIX}",
        ) from e
    with f:
        if f.format not in _WAV_FORMATS:
            raise InputError(
                415,
                "unsupported_media_type",
                f"the body is {f.format_info} audio, and only WAV is decoded; {_AUDIO_FIX}",
            )
        orig_rate, channels = f.samplerate, f.channels
        if not MIN_SAMPLE_RATE <= orig_rate <= MAX_SAMPLE_RATE:
            raise InputError(
                422,
                "bad_sample_rate",
                f"the WAV header declares {orig_rate} Hz, outside the supported "
                f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; fix: re-export the recording at a "
                "usual rate (e.g. 16000, 44100 or 48000 Hz)",
            )
        if not 1 <= channels <= MAX_CHANNELS:
            raise InputError(
                422,
                "too_many_channels",
                f"the WAV has {channels} channels, over the limit of {MAX_CHANNELS}; fix: mix "
                "it down to mono or stereo and retry",
            )
        if f.frames <= 0:
            raise InputError(422, "empty_audio", f"the WAV holds no samples; {_AUDIO_FIX}")
        seconds = f.frames / orig_rate
        if seconds > max_seconds:
            raise InputError(
                413,
                "audio_too_long",
                f"the recording is {seconds:.1f} s long, over the limit of {max_seconds:g} s; "
                "fix: split it into shorter clips and send each",
            )
        # Bounded before reading: frames <= max_seconds * MAX_SAMPLE_RATE, and one block of
        # <= MAX_CHANNELS channels at a time.
        wave = np.empty(f.frames, np.float32)
        done = 0
        try:
            while done < len(wave):
                block = f.read(
                    min(_BLOCK_FRAMES, len(wave) - done), dtype="float32", always_2d=True
                )
                if len(block) == 0:
                    break
                if not np.isfinite(block).all():
                    raise _non_finite()
                wave[done : done + len(block)] = block.mean(axis=1, dtype=np.float32)
                done += len(block)
        except sf.SoundFileError as e:
            raise InputError(
                400, "corrupt_audio", f"the WAV samples cannot be read ({_reason(e)}); {_AUDIO_FIX}"
            ) from e
    wave = wave[:done]
    if len(wave) == 0:
        raise InputError(422, "empty_audio", f"the WAV holds no samples; {_AUDIO_FIX}")
    np.clip(wave, -1.0, 1.0, out=wave)
    if orig_rate != sample_rate:
        wave = _resample(wave, orig_rate, sample_rate)
        np.clip(wave, -1.0, 1.0, out=wave)  # the filter's ringing can overshoot full scale
    return wave
