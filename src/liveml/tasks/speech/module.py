"""The speech training loop: CTC loss with SpecAugment, CER/WER on validation, AdamW one-cycle."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio
from torch import Tensor, nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from liveml.data.sampling import mix_seed
from liveml.tasks.speech.datamodule import Batch
from liveml.tasks.speech.model import DeployableRecognizer, build_recognizer
from liveml.tasks.speech.text import ALPHABET, greedy_decode
from liveml.training.taskmodule import TaskModule


def decode(log_probs: Tensor, lengths: Tensor) -> list[str]:
    """Greedy CTC transcripts of a batch of log-probabilities [N, T, C] with valid lengths."""
    best = log_probs.argmax(-1).cpu()
    return [greedy_decode(best[i, : int(n)].tolist()) for i, n in enumerate(lengths.cpu())]


def target_texts(targets: Tensor, target_lengths: Tensor) -> list[str]:
    """The transcripts of concatenated targets, every character spelled (not CTC-decoded,
    which would merge the double letters of "door" and "three")."""
    parts = targets.cpu().split(target_lengths.tolist())
    return ["".join(ALPHABET[i] for i in t.tolist()) for t in parts]


class SpeechModule(TaskModule):
    """Wraps `build_recognizer`; `forward(waves, wave_lengths)` gives (log_probs, lengths).

    `cfg` is the checked config (or its plain dict, as stored in checkpoints' hparams).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        cfg = self.cfg  # checked, also when reloaded from a checkpoint's plain dict
        m = cfg.model
        self.model = self.build_seeded(lambda: build_recognizer(m, int(cfg.data.sample_rate)))
        self.spec_augment = nn.Sequential(
            *[torchaudio.transforms.FrequencyMasking(int(m.freq_mask_width), iid_masks=True)]
            * int(m.freq_masks),
            *[torchaudio.transforms.TimeMasking(int(m.time_mask_width), iid_masks=True)]
            * int(m.time_masks),
        )
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self.val_cer = CharErrorRate()
        self.val_wer = WordErrorRate()

    def forward(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(waves, wave_lengths)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        waves, wave_lengths, targets, target_lengths = batch
        # VTLP, SpecAugment and dropout draw from a stream seeded by (seed, epoch, step), so a run
        # resumed from a checkpoint draws the same masks as an uninterrupted one.
        with torch.random.fork_rng(devices=[waves.device] if waves.is_cuda else []):
            torch.manual_seed(mix_seed(int(self.cfg.seed), self.current_epoch, batch_idx))
            lo, hi = (float(a) for a in self.cfg.model.vtlp)
            warp = None
            if hi > lo:
                warp = torch.empty(len(waves), device=waves.device).uniform_(lo, hi)
            feats, frame_lengths = self.model.features(waves, wave_lengths, warp)
            if len(self.spec_augment):
                # [N, F, T] -> [N, 1, F, T]: iid_masks draws a mask per utterance.
                feats = self.spec_augment(feats.unsqueeze(1)).squeeze(1)
            log_probs, lengths = self.model.encode(feats, frame_lengths)
        loss = self.ctc(log_probs.transpose(0, 1), targets, lengths, target_lengths)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(waves))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        waves, wave_lengths, targets, target_lengths = batch
        log_probs, lengths = self.model(waves, wave_lengths)
        loss = self.ctc(log_probs.transpose(0, 1), targets, lengths, target_lengths)
        self.log("val/loss", loss, batch_size=len(waves))
        refs = target_texts(targets, target_lengths)
        hyps = decode(log_probs, lengths)
        self.val_cer.update(hyps, refs)
        self.val_wer.update(hyps, refs)

    def on_validation_epoch_end(self) -> None:
        self.log("val/cer", self.val_cer.compute(), prog_bar=True)
        self.log("val/wer", self.val_wer.compute())
        self.val_cer.reset()
        self.val_wer.reset()

    def deployable(self) -> DeployableRecognizer:
        """The recognizer behind the flat export signature, in eval mode."""
        return DeployableRecognizer(self.model).eval()

    @torch.inference_mode()
    def transcribe(self, waveforms: list[Tensor], batch_size: int = 32) -> list[str]:
        """Greedy transcripts of 1-D float waveforms (any lengths), in eval mode."""
        was_training = self.training
        self.eval()
        # Length-sorted batches: little padding, so batched results match one-at-a-time ones.
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        out: dict[int, str] = {}
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                chunk = [waveforms[i].to(self.device) for i in idx]
                lengths = torch.tensor([len(w) for w in chunk], device=self.device)
                padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
                out.update(zip(idx, decode(*self.model(padded, lengths)), strict=True))
        finally:
            self.train(was_training)
        return [out[i] for i in range(len(waveforms))]
