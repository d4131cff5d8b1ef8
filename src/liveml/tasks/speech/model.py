"""The speech recognizer: log-mel features, a small strided CNN and a BiGRU, CTC over characters.

Features live inside the model, so a deployed file takes raw 16 kHz samples and nothing about
the front end can drift between training and serving. Everything scripts with `torch.jit.script`
and exports to ONNX (opset 17) with free batch and time axes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchaudio
from torch import Tensor, nn

from liveml.tasks.speech.text import ALPHABET


class LogMel(nn.Module):
    """Waveform [N, S >= one window] in [-1, 1] -> log-mel [N, n_mels, T], normalized per
    utterance and mel bin over its valid frames (levels and noise colour vary per recording).

    The power spectrum is a strided conv1d with a Hann-windowed DFT basis rather than
    torch.stft: the same numbers (a test checks them against torchaudio's MelSpectrogram),
    but ONNX's exporters cannot export the complex tensors that torch.stft returns. Windows
    never reach past a clip's end (no centring), so zero-padding a clip in a batch leaves its
    features exactly as they are alone.
    """

    def __init__(self, sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> None:
        super().__init__()
        self.win = round(sample_rate * win_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        n_freqs = self.win // 2 + 1
        t = torch.arange(self.win, dtype=torch.float64)
        f = torch.arange(n_freqs, dtype=torch.float64)
        angle = 2 * torch.pi * f[:, None] * t[None, :] / self.win
        window = torch.hann_window(self.win, periodic=True, dtype=torch.float64)
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        self.register_buffer("basis", basis.to(torch.float32).unsqueeze(1), persistent=False)
        self.n_freqs = n_freqs
        self.mel_scale = torchaudio.transforms.MelScale(n_mels, sample_rate, n_stft=n_freqs)

    def power(self, waves: Tensor) -> Tensor:
        """|STFT|^2 [N, win // 2 + 1, T] of uncentred windows."""
        spec = nn.functional.conv1d(waves.unsqueeze(1), self.basis, stride=self.hop)
        return spec[:, : self.n_freqs].pow(2) + spec[:, self.n_freqs :].pow(2)

    def frames(self, wave_lengths: Tensor) -> Tensor:
        """Valid frames of each waveform: windows that lie wholly inside its samples."""
        return torch.div(wave_lengths - self.win, self.hop, rounding_mode="floor") + 1

    def forward(
        self, waves: Tensor, wave_lengths: Tensor, warp: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`warp` [N] (training only) scales each utterance's frequency axis (VTLP)."""
        lengths = self.frames(wave_lengths)
        power = self.power(waves)
        if warp is not None:
            power = warp_frequencies(power, warp)
        x = torch.log(self.mel_scale(power) + 1e-6)
        t = torch.arange(x.shape[-1], device=x.device)
        mask = (t[None, :] < lengths[:, None]).to(x.dtype).unsqueeze(1)  # [N, 1, T]
        count = mask.sum(-1, keepdim=True)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = ((x - mean) ** 2 * mask).sum(-1, keepdim=True) / count
        # Padding frames become exactly 0 (the normalized mean), like a quiet pause.
        return (x - mean) / torch.sqrt(var + 1e-5) * mask, lengths


def warp_frequencies(power: Tensor, alpha: Tensor) -> Tensor:
    """Vocal tract length perturbation: P'(f) = P(f / alpha) per utterance, linearly
    interpolated; alpha > 1 moves formants and pitch up as a shorter vocal tract does."""
    n_freqs = power.shape[1]
    src = torch.arange(n_freqs, device=power.device, dtype=power.dtype)[None, :] / alpha[:, None]
    src = src.clamp(0, n_freqs - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_freqs - 1)
    w = (src - lo.to(power.dtype)).unsqueeze(-1)
    t = power.shape[-1]
    below = power.gather(1, lo.unsqueeze(-1).expand(-1, -1, t))
    above = power.gather(1, hi.unsqueeze(-1).expand(-1, -1, t))
    return below * (1 - w) + above * w


def _conv_stage(c_in: int, c_out: int, time_stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=(2, time_stride), padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Recognizer(nn.Module):
    """Log-mel -> conv stages (stride 2 in frequency, `time_strides` in time) -> BiGRU ->
    per-frame log-probabilities over ALPHABET (index 0 is the CTC blank)."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: int,
        win_ms: float,
        hop_ms: float,
        channels: list[int],
        time_strides: list[int],
        rnn_hidden: int,
        rnn_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if len(time_strides) != len(channels):
            raise ValueError(
                f"model.time_strides {time_strides} needs one entry per conv stage of {channels}"
            )
        self.features = LogMel(sample_rate, n_mels, win_ms, hop_ms)
        stages, c_in, f = [], 1, n_mels
        for c, s in zip(channels, time_strides, strict=True):
            stages.append(_conv_stage(c_in, c, s))
            c_in, f = c, (f - 1) // 2 + 1
        self.cnn = nn.Sequential(*stages)
        self.time_strides = [int(s) for s in time_strides]
        self.rnn = nn.GRU(
            c_in * f,
            rnn_hidden,
            num_layers=rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * rnn_hidden, len(ALPHABET))

    def output_lengths(self, frame_lengths: Tensor) -> Tensor:
        """Frames left after the strided convs (kernel 3, padding 1)."""
        for s in self.time_strides:
            frame_lengths = torch.div(frame_lengths - 1, s, rounding_mode="floor") + 1
        return frame_lengths

    def encode(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized log-mel [N, n_mels, T] -> (log_probs [N, T', C], lengths [N] int64)."""
        x = self.cnn(feats.unsqueeze(1))  # [N, C, F', T']
        n, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(n, t, c * f)
        x, _ = self.rnn(x)
        logits = self.head(self.dropout(x))
        return torch.log_softmax(logits, dim=-1), self.output_lengths(frame_lengths)

    def forward(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, frame_lengths = self.features(waves, wave_lengths)
        return self.encode(feats, frame_lengths)


def build_recognizer(model_cfg: Any, sample_rate: int) -> Recognizer:
    """The recognizer described by the `model` config group, for `sample_rate` Hz audio."""
    return Recognizer(
        sample_rate=int(sample_rate),
        n_mels=int(model_cfg.n_mels),
        win_ms=float(model_cfg.win_ms),
        hop_ms=float(model_cfg.hop_ms),
        channels=[int(c) for c in model_cfg.channels],
        time_strides=[int(s) for s in model_cfg.time_strides],
        rnn_hidden=int(model_cfg.rnn_hidden),
        rnn_layers=int(model_cfg.rnn_layers),
        dropout=float(model_cfg.dropout),
    )


class DeployableRecognizer(nn.Module):
    """A recognizer behind a flat signature: waveforms [N, S] float32 in [-1, 1] at the data's
    sample rate; log_probs [N, T, C] over ALPHABET and lengths [N] int64 (valid frames) out.

    All N waveforms count as S samples long (pad shorter ones, or send one at a time).
    """

    input_names = ("waveforms",)
    output_names = ("log_probs", "lengths")
    # Batch and time are free: ONNX exporters pass this as `dynamic_axes`.
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {
        "waveforms": {0: "N", 1: "S"},
        "log_probs": {0: "N", 1: "T"},
        "lengths": {0: "N"},
    }

    def __init__(self, recognizer: Recognizer) -> None:
        super().__init__()
        self.recognizer = recognizer

    def forward(self, waveforms: Tensor) -> tuple[Tensor, Tensor]:
        # A length per row built from the input's shape, so tracing keeps the time axis free.
        wave_lengths = torch.ones_like(waveforms[:, 0], dtype=torch.int64) * waveforms.shape[1]
        log_probs, lengths = self.recognizer(waveforms, wave_lengths)
        return log_probs, lengths

    @staticmethod
    def signature(example: Tensor, batch: int | str = "N") -> dict:
        """Input/output signature in words and shapes (for the export info and model card)."""
        return {
            "inputs": [
                {
                    "name": "waveforms",
                    "dtype": "float32",
                    "shape": [batch, "S"],
                    "meaning": "mono audio in [-1, 1] at the data's sample rate, S >= 1 window",
                }
            ],
            "outputs": [
                {
                    "name": "log_probs",
                    "dtype": "float32",
                    "shape": [batch, "T", len(ALPHABET)],
                    "meaning": f"per-frame log-probabilities over {ALPHABET!r} (0 = CTC blank)",
                },
                {
                    "name": "lengths",
                    "dtype": "int64",
                    "shape": [batch],
                    "meaning": "valid frames of each row of log_probs (greedy CTC decoding)",
                },
            ],
        }
