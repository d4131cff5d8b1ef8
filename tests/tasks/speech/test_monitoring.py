"""The speech task's monitoring hooks: recording features, the recognizer's view, drifted draws
(through the framework's draw loop, as the reference stage and the benches draw)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from liveml.core.config import compose
from liveml.core.project import Project
from liveml.monitoring.monitor import draw_inputs as framework_draw_inputs
from liveml.serving.runtime import Runtime
from liveml.tasks import get_task
from liveml.tasks.speech import monitoring
from liveml.tasks.speech.serving import SpeechPredictor

REPO = Path(__file__).resolve().parents[3]
N = 10  # clips per condition, paired by (stream, index): same text, pads and level
RATE = 16_000


def task_cfg(*overrides: str):
    """The run config of conf/ for speech (the recipe of conf/data/speech.yaml, all voices)."""
    return compose(["task=speech", *overrides], project=Project(REPO))


def draw_inputs(cfg, n: int, **kw) -> list[bytes]:
    return framework_draw_inputs(get_task("speech"), cfg, n, **kw)


def features(inputs: list[bytes]) -> dict[str, np.ndarray]:
    rows = [monitoring.input_features(data) for data in inputs]
    return {k: np.array([r[k] for r in rows]) for k in monitoring.FEATURES}


def wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base() -> list[bytes]:
    return draw_inputs(task_cfg(), N, stream=0)


@pytest.fixture(scope="module")
def base_features(base) -> dict[str, np.ndarray]:
    return features(base)


def test_features_of_generated_clips_are_finite_and_in_range(base, base_features):
    assert list(monitoring.input_features(base[0])) == list(monitoring.FEATURES)
    for name, values in base_features.items():
        assert values.shape == (N,) and np.isfinite(values).all(), name
    f = base_features
    info = sf.info(io.BytesIO(base[0]))
    assert f["duration"][0] == pytest.approx(info.frames / info.samplerate)
    assert ((f["duration"] > 0.2) & (f["duration"] < 5)).all()
    assert ((f["rms_db"] > -50) & (f["rms_db"] < 0)).all()  # gain_db in [-12, -1] of the peak
    assert ((f["snr_db"] > 5) & (f["snr_db"] < 60)).all()  # the recipe's 15-40 dB, estimated
    assert ((f["spectral_centroid"] > 200) & (f["spectral_centroid"] < 6000)).all()
    assert ((f["silence_ratio"] > 0) & (f["silence_ratio"] < 1)).all()  # pads, then speech


def test_noisier_clips_have_lower_snr(base_features):
    noisier = features(draw_inputs(task_cfg(), N, stream=0, scenario="noisier", strength=10))
    drop = base_features["snr_db"] - noisier["snr_db"]
    assert (drop > 0).all()
    assert drop.mean() == pytest.approx(10, abs=3)  # the recipe's SNR range moved by 10 dB


def test_faster_speech_gives_shorter_clips(base_features):
    faster = features(draw_inputs(task_cfg(), N, stream=0, scenario="faster", strength=0.5))
    # The same words with the same pads: every clip shorter, the speech part by about 1/1.5.
    assert (faster["duration"] < base_features["duration"]).all()
    assert np.mean(faster["duration"] / base_features["duration"]) < 0.9
    assert faster["silence_ratio"].mean() > base_features["silence_ratio"].mean()


def test_features_of_a_known_signal():
    """A 1 kHz tone for 1 s, then 1 s of faint noise (-80 dBFS), at 8 kHz (any rate decodes)."""
    rate = 8000
    t = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t) + 1e-4 * rng.standard_normal(rate)
    quiet = 1e-4 * rng.standard_normal(rate)
    f = monitoring.input_features(wav(np.concatenate([tone, quiet]), rate))
    assert f["duration"] == pytest.approx(2.0)
    assert f["rms_db"] == pytest.approx(10 * np.log10(0.5**2 / 2 / 2), abs=0.2)
    assert f["spectral_centroid"] == pytest.approx(1000, rel=0.05)
    assert f["silence_ratio"] == pytest.approx(0.5, abs=0.02)
    assert f["snr_db"] > 50
    # The tone crosses zero 2000 times a second; the noise about 8000 * 0.5: ~3000 on average.
    assert f["zero_crossing"] == pytest.approx(3000, rel=0.1)


def test_digital_silence_counts_as_silence():
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    f = monitoring.input_features(wav(np.concatenate([np.zeros(RATE), tone])))
    assert f["silence_ratio"] == pytest.approx(0.5, abs=0.02)
    assert np.isfinite(list(f.values())).all()


@pytest.mark.parametrize(
    "data",
    [b"", b"RIFF\x00\x00\x00\x00WAVEgarbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
)
def test_undecodable_bytes_raise_value_error_with_a_fix(data):
    with pytest.raises(ValueError, match="fix"):
        monitoring.input_features(data)


def test_non_wav_audio_is_refused():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(1600), RATE, format="FLAC")
    with pytest.raises(ValueError, match=r"only WAV.*fix"):
        monitoring.input_features(buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Draws and recipes


def test_draw_inputs_is_deterministic_and_streams_differ(base):
    cfg = task_cfg()
    assert draw_inputs(cfg, 2, stream=0) == base[:2]
    other = draw_inputs(cfg, 2, stream=1)
    assert all(a != b for a, b in zip(base[:2], other, strict=True))
    info = sf.info(io.BytesIO(base[0]))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        RATE,
        1,
    )
    with pytest.raises(ValueError, match="stream"):
        draw_inputs(cfg, 1, stream=-1)


def test_draws_speak_with_the_train_voices(base):
    """Fully unseen voices are the draws of a recipe whose train voices are the test voices."""
    test_voices = list(task_cfg().data.voices.test)
    unseen = draw_inputs(task_cfg(), 1, stream=0, scenario="unseen_voices", strength=1)
    swapped = task_cfg()
    swapped.data.voices.train = test_voices
    assert draw_inputs(swapped, 1, stream=0) == unseen
    assert unseen != base[:1]


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9])
def test_unseen_voices_mixes_the_test_voices_in_at_the_share(share):
    voices = task_cfg().data.voices
    train = monitoring.drifted_recipe(task_cfg().data, "unseen_voices", share).voices.train
    unseen = np.isin(list(train), list(voices.test))
    assert unseen.mean() == pytest.approx(share, abs=monitoring.SHARE_TOLERANCE)
    # Every voice of a kind equally often: the mix of seen speakers stays as trained.
    counts = {v: list(train).count(v) for v in train}
    assert len({counts[v] for v in voices.train}) == 1
    assert len({counts[v] for v in voices.test}) == 1


def test_drifted_recipe_applies_each_scenario():
    data = task_cfg().data
    assert monitoring.drifted_recipe(data, None, 0) == data
    assert monitoring.drifted_recipe(data, "noisier", 0) == data
    noisier = monitoring.drifted_recipe(data, "noisier", 10)
    assert list(noisier.conditions.snr_db) == [5.0, 30.0]
    faster = monitoring.drifted_recipe(data, "faster", 0.5)
    assert list(faster.conditions.rate) == [210.0, 300.0]
    assert faster.conditions.snr_db == data.conditions.snr_db  # one condition at a time
    assert list(monitoring.drifted_recipe(data, "unseen_voices", 1).voices.train) == list(
        data.voices.test
    )
    assert data.conditions.rate == [140.0, 200.0]  # the input recipe is left alone


@pytest.mark.parametrize(
    ("scenario", "strength", "message"),
    [
        ("louder", 3.0, r"noisier.*unseen_voices.*faster"),
        ("unseen_voices", 1.5, r"\[0, 1\]"),
        ("faster", -0.5, ">= 0"),
        (None, 0.5, "without a scenario"),
    ],
)
def test_drifted_recipe_rejects_bad_requests(scenario, strength, message):
    cfg = task_cfg()
    with pytest.raises(ValueError, match=message):
        monitoring.drifted_recipe(cfg.data, scenario, strength)
    with pytest.raises(ValueError, match=message):  # the framework's draws check the same
        draw_inputs(cfg, 1, stream=0, scenario=scenario, strength=strength)


# ---------------------------------------------------------------------------------------------
# The model's view


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("turn left", "command"),
        ("Turn LEFT!", "command"),
        ("one two nine", "digits"),
        ("3 4", "digits"),
        ("", "empty"),
        ("turn one", "other"),
        ("tur left", "other"),
    ],
)
def test_transcript_class(transcript, expected):
    assert monitoring.transcript_class(transcript, ["stop", "turn left"]) == expected


@pytest.fixture(scope="module")
def tiny_module():
    """An untrained narrow recognizer: enough for shapes and for agreement with the server."""
    torch.set_num_threads(1)
    cfg = task_cfg()
    cfg.model.rnn_hidden = 16
    cfg.model.rnn_layers = 1
    return get_task("speech").module(cfg).eval()


def eager_predictor(module) -> SpeechPredictor:
    """The server's SpeechPredictor over the eager deployable instead of an exported file."""
    deployable = get_task("speech").deployable(module)

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(t.numpy() for t in deployable(torch.from_numpy(x)))

    card = {"lineage": {"config": OmegaConf.to_container(module.cfg)}}
    runtime = Runtime("speech", card, "torch", Path("eager"), "", forward)
    return SpeechPredictor(runtime, {"max_audio_s": 30.0})


def test_model_view_shapes_and_ranges(tiny_module, base):
    view = monitoring.model_view(tiny_module, base[:4])
    assert view["embedding"].dtype == np.float32 and view["embedding"].shape == (4, 32)
    assert np.isfinite(view["embedding"]).all()
    assert view["confidence"].dtype == np.float64 and view["confidence"].shape == (4,)
    alphabet = len(tiny_module.model.head.weight)
    assert ((1 / alphabet <= view["confidence"]) & (view["confidence"] <= 1)).all()
    assert set(view["predicted_class"]) <= set(monitoring.CLASSES)


def test_model_view_agrees_with_the_server(tiny_module, base):
    # Two clips cut to one length share a batch, as on the server; the others run alone.
    cut = [wav(monitoring.decode_wave(data)[0][:12_000]) for data in base[:2]]
    # And a clip shorter than one analysis window, which the server pads.
    inputs = [*cut, *base[2:4], wav(0.1 * np.random.default_rng(0).standard_normal(100))]
    view = monitoring.model_view(tiny_module, inputs, batch_size=8)
    predictor = eager_predictor(tiny_module)
    commands = list(tiny_module.cfg.data.commands)
    for i, data in enumerate(inputs):
        prepared = predictor.decode(data, "audio/wav")
        answer = predictor.run([prepared])[0]
        assert view["predicted_class"][i] == monitoring.transcript_class(
            answer["transcript"], commands
        )
        log_probs, lengths = predictor.runtime.run(prepared.tensor[None])
        top = np.exp(log_probs[0, : int(lengths[0])].max(-1))
        assert view["confidence"][i] == pytest.approx(top.mean(), rel=1e-5)
    alone = monitoring.model_view(tiny_module, inputs, batch_size=1)
    np.testing.assert_allclose(alone["embedding"], view["embedding"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(alone["confidence"], view["confidence"], rtol=1e-5)


def test_model_view_refuses_undecodable_input(tiny_module, base):
    with pytest.raises(ValueError, match="fix"):
        monitoring.model_view(tiny_module, [base[0], b"not audio"])
