"""Typed schemas of the speech task's `model` and `data` config groups."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VoicesConfig:
    """eSpeak NG voices: an accent (language voice) plus a '+variant' (timbre). Splits use
    disjoint variants, so validation and test speakers never occur in training."""

    accents: list[str] = field(default_factory=lambda: ["en-us", "en"])
    train: list[str] = field(default_factory=lambda: ["m1", "f1"])
    val: list[str] = field(default_factory=lambda: ["m2"])
    test: list[str] = field(default_factory=lambda: ["m3"])


@dataclass
class ConditionsConfig:
    """Speaking and recording conditions: what drifts in production (faster speech, noisier
    rooms, other microphones). Ranges are [low, high], sampled uniformly per utterance."""

    rate: list[float] = field(default_factory=lambda: [140.0, 200.0])  # words per minute
    pitch: list[float] = field(default_factory=lambda: [30.0, 70.0])  # eSpeak pitch 0-100
    snr_db: list[float] = field(default_factory=lambda: [15.0, 40.0])  # background noise
    reverb: float = 0.3  # probability of room reverberation
    rt60: list[float] = field(default_factory=lambda: [0.15, 0.5])  # reverb time, seconds
    gain_db: list[float] = field(default_factory=lambda: [-12.0, -1.0])  # level of the speech
    pad: list[float] = field(default_factory=lambda: [0.05, 0.3])  # silence before/after, s


@dataclass
class SpeechDataConfig:
    seed: int = 0
    sample_rate: int = 16_000
    n_train: int = 2400
    n_val: int = 200
    n_test: int = 300
    max_digits: int = 4  # digit strings have 1..max_digits digits
    command_share: float = 0.4  # share of utterances that are commands, not digit strings
    commands: list[str] = field(default_factory=lambda: ["stop", "go", "turn left"])
    voices: VoicesConfig = field(default_factory=VoicesConfig)
    conditions: ConditionsConfig = field(default_factory=ConditionsConfig)


@dataclass
class CtcConfig:
    """A compact CNN + BiGRU acoustic model over log-mel features, trained with CTC."""

    name: str = "crnn_ctc"
    n_mels: int = 64
    win_ms: float = 25.0
    hop_ms: float = 10.0
    channels: list[int] = field(default_factory=lambda: [32, 32])  # conv stages, stride 2 in freq
    time_strides: list[int] = field(default_factory=lambda: [2, 1])  # per conv stage
    rnn_hidden: int = 128
    rnn_layers: int = 2
    dropout: float = 0.1
    # Augmentation, in training only: waveform speed/level/echo (datamodule, per clip), then
    # VTLP and SpecAugment masks (torchaudio.transforms) on the features (module, per step).
    freq_masks: int = 2
    freq_mask_width: int = 10
    time_masks: int = 2
    time_mask_width: int = 12
    speed_perturb: list[float] = field(default_factory=lambda: [0.85, 1.15])  # [low, high]
    gain_db: float = 6.0  # random level change in training, +-gain_db
    echo_prob: float = 0.5  # share of training clips given a 20-80 ms flutter echo
    vtlp: list[float] = field(default_factory=lambda: [0.9, 1.3])  # frequency warp [low, high]
    lr: float = 0.003
    weight_decay: float = 0.0001
    warmup_frac: float = 0.1
    batch_size: int = 32
