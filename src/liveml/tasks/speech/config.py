"""Typed schemas of the speech task's `model` and `data` config groups: types only, every value
lives in conf/model/ and conf/data/ (MISSING here, so `check` names a key the YAML lacks)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class VoicesConfig:
    """eSpeak NG voices: an accent (language voice) plus a '+variant' (timbre). Splits use
    disjoint variants, so validation and test speakers never occur in training."""

    accents: list[str] = MISSING
    train: list[str] = MISSING
    val: list[str] = MISSING
    test: list[str] = MISSING


@dataclass
class ConditionsConfig:
    """Speaking and recording conditions: what drifts in production (faster speech, noisier
    rooms, other microphones). Ranges are [low, high], sampled uniformly per utterance."""

    rate: list[float] = MISSING  # words per minute
    pitch: list[float] = MISSING  # eSpeak pitch 0-100
    snr_db: list[float] = MISSING  # background noise
    reverb: float = MISSING  # probability of room reverberation
    rt60: list[float] = MISSING  # reverb time, seconds
    gain_db: list[float] = MISSING  # level of the speech
    pad: list[float] = MISSING  # silence before/after, s


@dataclass
class SpeechDataConfig:
    seed: int = MISSING
    sample_rate: int = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    max_digits: int = MISSING  # digit strings have 1..max_digits digits
    command_share: float = MISSING  # share of utterances that are commands, not digit strings
    commands: list[str] = MISSING
    voices: VoicesConfig = MISSING
    conditions: ConditionsConfig = MISSING


@dataclass
class CtcConfig:
    """A compact CNN + BiGRU acoustic model over log-mel features, trained with CTC."""

    name: str = MISSING
    n_mels: int = MISSING
    win_ms: float = MISSING
    hop_ms: float = MISSING
    channels: list[int] = MISSING  # conv stages, stride 2 in freq
    time_strides: list[int] = MISSING  # per conv stage
    rnn_hidden: int = MISSING
    rnn_layers: int = MISSING
    dropout: float = MISSING
    # Augmentation, in training only: waveform speed/level/echo (datamodule, per clip), then
    # VTLP and SpecAugment masks (torchaudio.transforms) on the features (module, per step).
    freq_masks: int = MISSING
    freq_mask_width: int = MISSING
    time_masks: int = MISSING
    time_mask_width: int = MISSING
    speed_perturb: list[float] = MISSING  # [low, high]
    gain_db: float = MISSING  # random level change in training, +-gain_db
    echo_prob: float = MISSING  # share of training clips given a 20-80 ms flutter echo
    vtlp: list[float] = MISSING  # frequency warp [low, high]
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_frac: float = MISSING
    batch_size: int = MISSING
