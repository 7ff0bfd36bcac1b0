"""Small generic helpers shared by the training, evaluation and inference code: seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["epoch_seed", "seed_everything", "seed_worker"]


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch on one rank, independent across ``(seed, epoch, rank)``.

    Reseeding at every epoch start makes a resumed run draw the same augmentation and shuffling as
    an uninterrupted one (exactly so with ``num_workers=0``).
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """Seeds NumPy and ``random`` in a DataLoader worker from its torch seed (a
    ``worker_init_fn``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
