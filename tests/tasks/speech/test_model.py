"""The speech recognizer: built from config, right shapes, it learns, and it exports."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchaudio
from omegaconf import OmegaConf

from liveml.tasks.speech.config import CtcConfig
from liveml.tasks.speech.evaluation import load_split
from liveml.tasks.speech.model import DeployableRecognizer, build_recognizer, warp_frequencies
from liveml.tasks.speech.text import ALPHABET, encode

REPO = Path(__file__).resolve().parents[3]


def default_model():
    """The model config of conf/model/crnn_ctc.yaml, typed (the schema gives types only)."""
    return OmegaConf.merge(
        OmegaConf.structured(CtcConfig), OmegaConf.load(REPO / "conf/model/crnn_ctc.yaml")
    )


TINY_MODEL = {"n_mels": 32, "channels": [8, 8], "rnn_hidden": 32, "rnn_layers": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model_cfg(**overrides):
    return OmegaConf.merge(default_model(), TINY_MODEL, overrides)


def test_default_config_shapes_and_lengths():
    torch.manual_seed(0)
    model = build_recognizer(default_model(), 16_000).eval()
    waves = torch.randn(2, 16_000) * 0.1
    with torch.no_grad():
        log_probs, lengths = model(waves, torch.tensor([16_000, 8_000]))
    # 25 ms windows every 10 ms: 98 and 48 frames; the conv stack halves time (strides 2, 1).
    assert log_probs.shape == (2, 49, len(ALPHABET))
    assert lengths.tolist() == [49, 24] and lengths.dtype == torch.int64
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 49))


def test_time_strides_need_one_entry_per_stage():
    with pytest.raises(ValueError, match="time_strides"):
        build_recognizer(tiny_model_cfg(time_strides=[2]), 16_000)


def test_power_spectrum_matches_torchaudio():
    """The exportable conv1d DFT computes what torchaudio's MelSpectrogram computes."""
    model = build_recognizer(tiny_model_cfg(), 16_000)
    wave = torch.randn(2, 6_000) * 0.1
    reference = torchaudio.transforms.MelSpectrogram(
        16_000, n_fft=400, win_length=400, hop_length=160, n_mels=32, center=False
    )(wave)
    ours = model.features.mel_scale(model.features.power(wave))
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


def test_frequency_warp_moves_a_peak_and_keeps_identity():
    power = torch.zeros(2, 201, 3)
    power[:, 40] = 1.0
    warped = warp_frequencies(power, torch.tensor([1.0, 1.25]))
    assert torch.equal(warped[0], power[0])
    assert warped[1, :, 0].argmax() == 50  # bin 40 * 1.25: formants move up


def test_padding_frames_do_not_shift_the_features():
    """Windows stay inside the clip and normalization uses its valid frames only, so padding
    a clip with zeros (as a batch does) leaves its features exactly as they are alone."""
    model = build_recognizer(tiny_model_cfg(), 16_000)
    wave = torch.randn(1, 8_000) * 0.1
    alone, n = model.features(wave, torch.tensor([8_000]))
    padded, m = model.features(torch.cat([wave, torch.zeros(1, 4_000)], 1), torch.tensor([8_000]))
    assert n.tolist() == m.tolist() == [alone.shape[-1]] == [48]
    torch.testing.assert_close(padded[..., :48], alone, atol=1e-5, rtol=1e-5)
    assert padded[..., 48:].abs().max() == 0


def test_ctc_loss_decreases_when_overfitting_a_few_clips(tiny_speech_data):
    waves, rows = load_split(tiny_speech_data, "train")
    waves, rows = waves[:4], rows[:4]
    x = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    wave_lengths = torch.tensor([len(w) for w in waves])
    targets = [torch.tensor(encode(r["text"])) for r in rows]
    torch.manual_seed(0)
    model = build_recognizer(tiny_model_cfg(dropout=0.0), 16_000).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    losses = []
    for _ in range(40):
        log_probs, lengths = model(x, wave_lengths)
        loss = ctc(
            log_probs.transpose(0, 1),
            torch.cat(targets),
            lengths,
            torch.tensor([len(t) for t in targets]),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def _deployable(**overrides) -> DeployableRecognizer:
    torch.manual_seed(0)
    return DeployableRecognizer(build_recognizer(tiny_model_cfg(**overrides), 16_000)).eval()


def test_deployable_signature_and_lengths():
    model = _deployable()
    with torch.no_grad():
        log_probs, lengths = model(torch.randn(3, 4_000) * 0.1)
    assert log_probs.shape[0] == 3 and log_probs.shape[2] == len(ALPHABET)
    assert lengths.dtype == torch.int64 and lengths.tolist() == [log_probs.shape[1]] * 3
    sig = DeployableRecognizer.signature(torch.zeros(1, 4_000))
    assert [i["name"] for i in sig["inputs"]] == list(DeployableRecognizer.input_names)
    assert [o["name"] for o in sig["outputs"]] == list(DeployableRecognizer.output_names)
    assert sig["outputs"][0]["shape"] == ["N", "T", len(ALPHABET)]


def _two_lengths(tiny_speech_data) -> list[torch.Tensor]:
    waves, _ = load_split(tiny_speech_data, "test")
    first, other = waves[0], next(w for w in waves if len(w) != len(waves[0]))
    return [first[None], other[None]]


def test_torchscript_matches_eager_on_two_lengths(tiny_speech_data, tmp_path):
    model = _deployable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(tmp_path / "m.pt"))
        loaded = torch.jit.load(str(tmp_path / "m.pt"))
    for x in _two_lengths(tiny_speech_data):
        with torch.no_grad():
            want, got = model(x), loaded(x)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
        assert torch.equal(got[1], want[1])


def test_onnx_matches_eager_on_two_lengths_with_a_free_time_axis(tiny_speech_data, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _deployable()
    x1, x2 = _two_lengths(tiny_speech_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x1,),
            str(tmp_path / "m.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=list(model.input_names),
            output_names=list(model.output_names),
            dynamic_axes=model.dynamic_axes,
        )
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for x in (x1, x2):
        with torch.no_grad():
            want = model(x)
        got = session.run(None, {"waveforms": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got[0]), want[0], atol=1e-4, rtol=0)
        assert got[1].tolist() == want[1].tolist()
