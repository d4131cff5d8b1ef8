"""eSpeak NG in-process through ctypes: text in, 22,050 Hz int16 speech out.

The `espeakng-loader` wheel ships libespeak-ng and its voice data, so nothing is installed on
the system and nothing is downloaded. The library keeps state across calls (pitch-flutter
phase, gain control, its noise generator): a reused instance says the same text differently
after other texts. `speak` therefore loads a fresh copy per utterance (~2.5 ms), so a clip is a
pure function of its inputs.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading

import numpy as np

SAMPLE_RATE = 22_050  # what eSpeak NG produces

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SynthesisError(RuntimeError):
    """eSpeak NG refused a voice or a text; the message says which and how to fix it."""


_LOCK = threading.Lock()  # the library's state is process-global


def speak(text: str, voice: str, *, rate: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak `text` with `voice` (e.g. "en-us+m3") from a freshly loaded library: int16 samples
    at SAMPLE_RATE; rate in words/min, pitch 0-100."""
    with _LOCK:
        synth = _Synthesizer()
        try:
            return synth.speak(text, voice, rate=rate, pitch=pitch)
        finally:
            synth.close()


class _Synthesizer:
    """One loaded eSpeak NG library; `close` unloads it so the next load starts from scratch."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate != SAMPLE_RATE:
            raise SynthesisError(f"eSpeak NG initialised at {rate} Hz, expected {SAMPLE_RATE}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: C holds it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: continue synthesis

    def speak(
        self, text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50
    ) -> np.ndarray:
        """int16 samples of `text` spoken by `voice` (the library's state carries over)."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SynthesisError(
                f"eSpeak NG has no voice {voice!r}; fix: use a language from its voice "
                "list (e.g. 'en-us') with an optional '+variant' (e.g. '+m3', '+f2')."
            )
        for param, value in (
            (_RATE, rate),
            (_PITCH, pitch),
            (_RANGE, pitch_range),
            (_VOLUME, 100),
        ):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        # eSpeak seeds its generator from the clock and some voices (breath, flutter) draw
        # from it: a fixed seed gives the same samples in any process, at any time.
        self._lib.espeak_ng_SetRandSeed(0)
        ctypes.CDLL(None).srand(0)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        err = self._lib.espeak_Synth(
            buf, len(buf), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None
        )
        self._lib.espeak_Synchronize()
        if err != 0:
            raise SynthesisError(f"eSpeak NG failed (code {err}) on text {text!r}")
        out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return out

    def close(self) -> None:
        self._lib.espeak_Terminate()
        # dlopen counts references: unloading the last one drops all of the library's state.
        _ctypes.dlclose(self._lib._handle)
