"""Typed schemas of the task's `model` and `data` config groups.

No defaults: conf/model/textintent.yaml and conf/data/textintent.yaml are the one place the
values live, and a key missing there is an error naming it, not a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class NgramBagConfig:
    """A hashed bag of words and character trigrams, averaged, then one linear layer."""

    name: str = MISSING
    n_buckets: int = MISSING  # size of the hash space of tokens (id 0 is padding)
    max_tokens: int = MISSING  # tokens the model reads per text: the input length L
    embed_dim: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_frac: float = MISSING
    batch_size: int = MISSING


@dataclass
class TextIntentDataConfig:
    """The recipe of the synthetic support messages. `typo_rate`, `fillers`, `shout_rate` and
    `digit_rate` are what drifts in production (see the task's scenarios)."""

    seed: int = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    max_chars: int = MISSING  # longest message the generator writes (cut at a word boundary)
    typo_rate: float = MISSING  # chance per letter of a typo (swap, drop, double, replace)
    fillers: float = MISSING  # mean number of off-topic filler sentences per message
    shout_rate: float = MISSING  # share of messages written in capitals
    digit_rate: float = MISSING  # share of messages quoting an order or ticket number


# Drift scenarios of the recipe (`Task.drifted_recipe`): name -> what it changes, in words.
SCENARIOS: dict[str, str] = {
    "longer": "data.fillers + 3 * strength filler sentences, data.max_chars * (1 + strength)",
    "typos": "data.typo_rate + 0.1 * strength (at most 0.5): more misspelt letters",
    "shouting": "data.shout_rate + strength (at most 1): more messages in capitals",
}
