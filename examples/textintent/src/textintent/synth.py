"""Synthetic customer-support messages: templates per intent, filled from small vocabularies,
then the recipe's conditions (fillers, order numbers, capitals, typos, length cap) applied.

Deterministic in the recipe: message i of split s draws only from a numpy generator seeded
with (seed, s, i) (`message_rng`, which is also the task's `sample_rng`), so the same recipe
writes the same bytes, and the drift monitor's draws from other streams are new messages of
the same distribution. Intents take turns (message i has intent i mod k), so splits are
balanced. No message repeats anywhere in a dataset (compared case- and space-insensitively):
a text in both train and test would only measure memory.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from liveml.core.errors import ConfigError

from textintent.config import SCENARIOS

SPLITS = ("train", "val", "test")
# What each intent sounds like. `{slot}` is filled from SLOTS; `{n3}` / `{n8}` are digits.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {product}",
        "why is there an extra fee on my {bill}",
        "my {pay} was declined but the money left my account",
        "can you explain the charge of {amount} on my {bill}",
        "I need an invoice for my last {purchase}",
        "the price on my {bill} is higher than what I agreed to",
        "please update the {pay} you charge every month",
        "I got billed after I cancelled my {plan}",
        "you took {amount} from my {pay} without asking",
        "I was overcharged for the {plan} {when}",
    ),
    "delivery": (
        "where is my {parcel}, it was due {when}",
        "my {parcel} still has not arrived",
        "the tracking for my {parcel} has not updated since {when}",
        "{carrier} says delivered but I never got the {parcel}",
        "can I change the delivery address for my {parcel}",
        "{carrier} left my {parcel} at the wrong door",
        "how long does shipping to {place} take",
        "my delivery is late again, it should have come {when}",
        "is it possible to get my {parcel} sent to {place} instead",
        "nobody was home when {carrier} came, can they try again",
    ),
    "returns": (
        "I want to return the {product} I bought {when}",
        "how do I send back a {defect} {product}",
        "the {product} arrived {defect}, I would like my money back",
        "can I exchange my {product} for another size",
        "I sent the return {when} and still no refund",
        "please give me a return label for the {product}",
        "the {product} does not fit, can I swap it",
        "I changed my mind about the {product}, can I send it back",
        "you sent me the wrong {product}, how do I return it",
    ),
    "account": (
        "I cannot log in to my account",
        "please reset my password, the link has expired",
        "how do I change the email address on my profile",
        "someone else signed in to my account {when}",
        "I want to delete my account and all my data",
        "my account is locked after too many attempts",
        "I never got the verification code on my {device}",
        "how do I update my phone number on my profile",
        "I forgot my username and my password",
        "can I merge my two accounts into one",
    ),
    "technical": (
        "the app crashes when I open the {screen}",
        "the website shows an error on the {screen}",
        "the {screen} will not load on my {device}",
        "the app is very slow on my {device} since the update",
        "I get error {n3} when I try to {action}",
        "the button on the {screen} does nothing",
        "notifications stopped working on my {device}",
        "the page freezes every time I try to {action}",
        "your app keeps logging me out on my {device} when I {action}",
    ),
}
SLOTS: dict[str, tuple[str, ...]] = {
    "product": (
        "jacket", "blender", "phone case", "pair of shoes", "lamp", "backpack",
        "coffee maker", "headphones", "desk chair", "kettle", "watch", "rain coat",
    ),
    "bill": ("bill", "invoice", "statement", "card statement", "receipt"),
    "pay": ("card", "credit card", "payment", "bank transfer", "paypal payment"),
    "amount": ("$19.99", "$5", "12 euros", "$49", "30 pounds", "$120"),
    "purchase": ("order", "purchase", "subscription", "renewal"),
    "plan": ("subscription", "membership", "plan", "premium plan", "yearly plan"),
    "when": (
        "yesterday", "last week", "on monday", "two days ago", "this morning",
        "last friday", "a week ago", "three weeks ago",
    ),
    "parcel": ("package", "parcel", "order", "box", "shipment"),
    "carrier": ("the courier", "UPS", "DHL", "the driver", "the post office", "FedEx"),
    "place": ("canada", "the uk", "berlin", "my office", "a po box", "my parents"),
    "defect": ("broken", "damaged", "scratched", "faulty", "torn", "stained"),
    "screen": (
        "checkout", "login screen", "settings", "cart", "home screen", "order history",
        "search page", "payment page",
    ),
    "device": ("iphone", "android phone", "laptop", "tablet", "pc", "mac"),
    "action": ("pay", "check out", "upload a photo", "save my settings", "search", "sign in"),
}  # fmt: skip
GREETINGS = ("hi", "hello", "hey", "good morning", "dear support", "hi there", "hello team")
REFERENCES = (
    "my order number is {n8}.",
    "order #{n8}.",
    "ticket {n8}.",
    "reference: {n8}.",
    "customer id {n8}.",
)
FILLERS = (
    "I have been a customer for years.",
    "this is really frustrating.",
    "please help me.",
    "I tried calling but nobody answered.",
    "it is urgent.",
    "I already read the help pages.",
    "my friend had the same problem.",
    "I hope you can sort this out quickly.",
    "this is the second time I write to you.",
    "let me know what you need from me.",
    "sorry for the long message.",
    "I am writing from my work email.",
)
SIGN_OFFS = ("thanks", "thank you", "regards", "cheers", "thanks in advance", "best wishes")
GREETING_SHARE = 0.5
SIGN_OFF_SHARE = 0.4
CASUAL_SHARE = 0.3  # of the messages not in capitals: all lower case
MAX_FILLERS = 12
MAX_ATTEMPTS = 50  # redraws of a message that repeats an earlier one
_SLOT = re.compile(r"\{(\w+)\}")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")


@dataclass(frozen=True)
class Recipe:
    """A checked data recipe (whatever form it came in: DictConfig, dataclass or dict)."""

    seed: int
    n_train: int
    n_val: int
    n_test: int
    max_chars: int
    typo_rate: float
    fillers: float
    shout_rate: float
    digit_rate: float

    @classmethod
    def of(cls, recipe: Any) -> Recipe:
        if isinstance(recipe, Recipe):
            return recipe
        get = recipe.get if isinstance(recipe, Mapping) else lambda k: getattr(recipe, k)
        r = cls(
            seed=int(get("seed")),
            n_train=int(get("n_train")),
            n_val=int(get("n_val")),
            n_test=int(get("n_test")),
            max_chars=int(get("max_chars")),
            typo_rate=float(get("typo_rate")),
            fillers=float(get("fillers")),
            shout_rate=float(get("shout_rate")),
            digit_rate=float(get("digit_rate")),
        )
        r.check()
        return r

    def check(self) -> None:
        rules = [
            ("n_train", self.n_train >= 1, "at least 1"),
            ("n_val", self.n_val >= 1, "at least 1"),
            ("n_test", self.n_test >= 1, "at least 1"),
            ("max_chars", self.max_chars >= 40, "at least 40"),
            ("typo_rate", 0 <= self.typo_rate <= 0.5, "between 0 and 0.5"),
            ("fillers", 0 <= self.fillers <= MAX_FILLERS, f"between 0 and {MAX_FILLERS}"),
            ("shout_rate", 0 <= self.shout_rate <= 1, "between 0 and 1"),
            ("digit_rate", 0 <= self.digit_rate <= 1, "between 0 and 1"),
        ]
        bad = [f"`data.{k}` is {getattr(self, k)!r} ({rule})" for k, ok, rule in rules if not ok]
        if bad:
            raise ConfigError(
                "textintent data recipe: " + "; ".join(bad) + ". Fix conf/data/textintent.yaml "
                "or the override."
            )


def check_classes(classes: list[str]) -> list[str]:
    """`classes` (task.classes) if the generator can write them all; ConfigError otherwise."""
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in TEMPLATES]
    if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(
            f"task.classes is {classes}; the textintent generator writes 2 or more distinct "
            f"intents of {list(TEMPLATES)}"
            + (f" (it has no messages for {unknown})" if unknown else "")
            + ". Fix `classes` in conf/task/textintent.yaml."
        )
    return classes


def message_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of message `index` of stream `stream` (split number 0..2; the monitor's
    draws use streams from 100 on)."""
    from liveml.data.sampling import mix_seed

    return np.random.default_rng(mix_seed(int(seed), int(stream), int(index)))


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(template: str, rng: np.random.Generator) -> str:
    def slot(m: re.Match) -> str:
        name = m.group(1)
        if name in ("n3", "n8"):
            digits = int(name[1:])
            return str(int(rng.integers(10 ** (digits - 1), 10**digits)))
        return _pick(SLOTS[name], rng)

    return _SLOT.sub(slot, template)


def _typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each letter, with probability `rate`: swapped with the next, dropped, doubled or
    replaced by a random letter (its case kept)."""
    if rate <= 0:
        return text
    n = len(text)
    hit, op, letter = rng.random(n), rng.integers(0, 4, n), rng.integers(0, 26, n)
    out: list[str] = []
    i = 0
    while i < n:
        ch = text[i]
        if not (ch.isalpha() and hit[i] < rate):
            out.append(ch)
        elif op[i] == 0 and i + 1 < n and text[i + 1].isalpha():
            out += [text[i + 1], ch]
            i += 1
        elif op[i] == 1:
            pass
        elif op[i] == 2:
            out += [ch, ch]
        else:
            new = chr(ord("a") + int(letter[i]))
            out.append(new.upper() if ch.isupper() else new)
        i += 1
    return "".join(out)


def _cut(text: str, max_chars: int) -> str:
    """`text` cut at the last word boundary within `max_chars`."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    return (head.rsplit(" ", 1)[0] if " " in head else head[:max_chars]).rstrip()


def draw_message(recipe: Any, intent: str, rng: np.random.Generator) -> str:
    """One message of `intent` under `recipe`, drawn from `rng` only."""
    r = Recipe.of(recipe)
    parts: list[str] = []
    if rng.random() < GREETING_SHARE:
        parts.append(_pick(GREETINGS, rng) + ",")
    parts.append(_fill(_pick(TEMPLATES[intent], rng), rng) + _pick((".", "!", "?", "."), rng))
    if rng.random() < r.digit_rate:
        parts.append(_fill(_pick(REFERENCES, rng), rng))
    for _ in range(min(int(rng.poisson(r.fillers)), MAX_FILLERS)):
        parts.append(_pick(FILLERS, rng))
    if rng.random() < SIGN_OFF_SHARE:
        parts.append(_pick(SIGN_OFFS, rng))
    text = " ".join(parts)
    style = rng.random()
    if style < r.shout_rate:
        text = text.upper()
    elif style < r.shout_rate + (1 - r.shout_rate) * CASUAL_SHARE:
        text = text.lower()
    else:
        text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
    return _cut(_typos(text, r.typo_rate, rng), r.max_chars)


def normalized(text: str) -> str:
    """The form two texts are compared in for duplicates: lower case, single spaces."""
    return " ".join(text.lower().split())


def generate(data_cfg: Any, classes: list[str], out_dir: Path) -> dict:
    """Write splits train/val/test of the recipe into `out_dir` (layout: textintent.layout);
    return counts per split and intent, and the mean length."""
    from textintent.layout import write_texts

    r = Recipe.of(data_cfg)
    classes = check_classes(classes)
    seen: set[str] = set()
    summary: dict[str, Any] = {"splits": {}, "classes": classes}
    lengths: list[int] = []
    for stream, split in enumerate(SPLITS):
        rows: list[tuple[str, bytes, dict]] = []
        for index in range(getattr(r, f"n_{split}")):
            rng = message_rng(r.seed, stream, index)
            intent = classes[index % len(classes)]  # balanced splits
            for _ in range(MAX_ATTEMPTS):
                text = draw_message(r, intent, rng)
                if normalized(text) not in seen:
                    break
            else:
                raise ConfigError(
                    f"the recipe makes no new {intent!r} message for {split} #{index} in "
                    f"{MAX_ATTEMPTS} tries: it repeats itself; fix: ask for fewer messages "
                    "(data.n_*) or more variety (data.fillers, data.digit_rate)."
                )
            seen.add(normalized(text))
            lengths.append(len(text))
            rows.append((f"{split}_{index:05d}", text.encode("utf-8"), {"intent": intent}))
        write_texts(Path(out_dir), split, rows)
        summary["splits"][split] = {
            c: sum(label["intent"] == c for _, _, label in rows) for c in classes
        }
    summary["mean_chars"] = round(float(np.mean(lengths)), 2)
    return summary


# --- drift --------------------------------------------------------------------------------


def drifted_recipe(recipe: Any, scenario: str, strength: float) -> Any:
    """`recipe` (of the kind given: DictConfig, dataclass or dict) with `scenario` applied at
    `strength` > 0; ValueError naming the fix for an unknown scenario or a bad strength."""
    import math

    if scenario not in SCENARIOS:
        raise ValueError(
            f"unknown drift scenario {scenario!r}; fix: use one of "
            + "; ".join(f"{k} ({v})" for k, v in SCENARIOS.items())
        )
    strength = float(strength)
    if not math.isfinite(strength) or strength <= 0:
        raise ValueError(f"drift strength {strength} is not a finite number > 0; fix: pass one")
    r = Recipe.of(recipe)
    if scenario == "longer":
        changes = {
            "fillers": min(MAX_FILLERS, r.fillers + 3 * strength),
            "max_chars": round(r.max_chars * (1 + strength)),
        }
    elif scenario == "typos":
        changes = {"typo_rate": min(0.5, r.typo_rate + 0.1 * strength)}
    else:  # shouting
        changes = {"shout_rate": min(1.0, r.shout_rate + strength)}
    return _replace(recipe, changes)


def _replace(recipe: Any, changes: dict) -> Any:
    if dataclasses.is_dataclass(recipe) and not isinstance(recipe, type):
        return dataclasses.replace(recipe, **changes)
    if isinstance(recipe, dict):
        return {**recipe, **changes}
    out = copy.deepcopy(recipe)  # an OmegaConf DictConfig (typed: values stay checked)
    for key, value in changes.items():
        out[key] = value
    return out
