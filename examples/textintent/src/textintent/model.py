"""The network: a hashed bag of words and character trigrams (`textintent.text`), averaged
into one vector, then a linear layer over the intents. Tiny and fast: it learns the task in
seconds on a CPU, and its exports are two matrix lookups.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NgramBag(nn.Module):
    """token ids int64 [N, L] (0 = padding) -> logits [N, C]; `embed` gives the mean vector."""

    def __init__(self, n_buckets: int, embed_dim: int, n_classes: int):
        super().__init__()
        self.embedding = nn.Embedding(n_buckets, embed_dim, padding_idx=0)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def embed(self, token_ids: Tensor) -> Tensor:
        """The mean of the non-padding tokens' vectors, [N, D] (zero for a text of none)."""
        count = (token_ids != 0).sum(dim=1, keepdim=True).clamp_min(1)
        return self.embedding(token_ids).sum(dim=1) / count.to(self.embedding.weight.dtype)

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.classifier(self.embed(token_ids))


class DeployableIntent(nn.Module):
    """The served network: token ids in, class probabilities out (liveml's export keeps the
    batch axis free, as the signature's "N" says)."""

    def __init__(self, net: NgramBag):
        super().__init__()
        self.net = net

    def forward(self, token_ids: Tensor) -> tuple[Tensor]:
        return (torch.softmax(self.net(token_ids), dim=-1),)

    @staticmethod
    def signature(example: Tensor, n_classes: int | str = "C") -> dict:
        return {
            "inputs": [
                {
                    "name": "token_ids",
                    "dtype": "int64",
                    "shape": ["N", int(example.shape[-1])],
                    "meaning": "hashed ids of the text's words and character trigrams, 0 = "
                    "padding (textintent.text.featurize)",
                }
            ],
            "outputs": [
                {
                    "name": "probabilities",
                    "dtype": "float32",
                    "shape": ["N", n_classes],
                    "meaning": "probability of each intent, in the order of task.classes",
                }
            ],
        }
