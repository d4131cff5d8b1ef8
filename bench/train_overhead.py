"""Framework overhead: liveml's `train(cfg)` vs a plain PyTorch loop, same model/data/steps.

liveml's side includes everything a user gets: Hydra-composed config checks, lineage (git +
DVC data hashes), Lightning, W&B offline run, CSV metric log, epoch checkpoints and the atomic
model folder. Both sides train the same detector with the same optimizer, schedule, data
loader and number of steps; validation is off on both (it is work, not overhead).

    .venv/bin/python bench/train_overhead.py [--epochs 2] [--n-train 400]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def plain_loop(cfg, data_dir: Path) -> float:
    """Seconds for a hand-written loop over the same loader, model, optimizer and schedule."""
    import torch

    from liveml.tasks.defects.datamodule import DefectsDataModule
    from liveml.tasks.defects.model import build_detector

    torch.manual_seed(cfg.seed)
    loader = DefectsDataModule(cfg, data_dir).train_dataloader()
    model = build_detector(cfg.model, len(cfg.task.classes), cfg.data.image_size).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.model.weight_decay}, {"params": no_decay}],
        lr=cfg.model.lr,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.model.lr, total_steps=len(loader) * cfg.trainer.max_epochs
    )
    start = time.perf_counter()
    for epoch in range(cfg.trainer.max_epochs):
        loader.sampler.set_epoch(epoch)
        for images, targets in loader:
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def liveml_train(cfg, project) -> float:
    """Seconds for `liveml.training.run.train(cfg)`, the function the DVC stage runs."""
    from liveml.training.run import train

    start = time.perf_counter()
    train(cfg, project=project, resume=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=400)
    args = parser.parse_args()

    import torch

    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.tasks import get_task

    repo = Project.find(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A project folder of its own: conf/ from the repo, every output under tmp.
        (tmp / "conf").symlink_to(repo.conf_dir)
        project = Project(tmp)
        overrides = [
            f"data.n_train={args.n_train}",
            "data.n_val=16",
            "data.n_test=16",
            f"trainer.max_epochs={args.epochs}",
            "+trainer.limit_val_batches=0",
            f"logger.dir={tmp / 'wandb'}",
        ]
        cfg = compose(overrides, project)
        torch.set_num_threads(cfg.trainer.num_threads)
        get_task(cfg.task.name).generate(cfg, project.path(cfg.paths.data))

        t_plain = plain_loop(cfg, project.path(cfg.paths.data))
        t_liveml = liveml_train(cfg, project)

    steps = args.epochs * (args.n_train // cfg.model.batch_size)
    batch = cfg.model.batch_size
    print(f"steps: {steps} ({args.epochs} epochs x {args.n_train} images, batch {batch})")
    print(f"plain PyTorch loop : {t_plain:7.2f} s")
    print(f"liveml train(cfg)  : {t_liveml:7.2f} s")
    print(f"overhead ratio     : {t_liveml / t_plain:7.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
