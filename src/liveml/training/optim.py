"""The optimizer recipe shared by the tasks: AdamW (no decay on norms and biases) with a
per-step one-cycle schedule, returned in Lightning's `configure_optimizers` format."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw_one_cycle(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    warmup_frac: float,
    total_steps: int,
) -> dict:
    """AdamW + OneCycleLR (linear warm-up for `warmup_frac` of the steps, then cosine decay).

    Norms and biases (1-d parameters) get no weight decay: decaying them only slows
    from-scratch training. The scheduler steps per batch; its state is in the checkpoint.
    """
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": float(weight_decay)},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=float(lr),
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=float(lr),
        total_steps=max(1, int(total_steps)),
        pct_start=float(warmup_frac),
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e3,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
