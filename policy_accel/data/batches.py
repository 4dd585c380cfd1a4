"""Shuffled training batches whose order is a function of (seed, position) alone, so a resumed run
continues with exactly the batches an uninterrupted run would have drawn.

A ``DataLoader(shuffle=True, generator=...)`` ties the order to the generator's state, which a
checkpoint does not hold: after a resume the batches (and so the weights) differ from an uninterrupted
run. Here epoch ``e`` is the permutation drawn by a generator seeded ``seed + e``, and batch ``p`` of the
endless stream is slice ``p % per_epoch`` of epoch ``p // per_epoch``; :meth:`seek` moves to any batch
without drawing or loading the ones before it.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """An endless stream of shuffled index batches (``drop_last``), positioned by a batch count.

    Use as ``DataLoader(dataset, batch_sampler=sampler)`` with ``num_workers=0``: the loader then asks for
    one batch at a time, so :attr:`position` is the number of batches handed out."""

    def __init__(self, n_items: int, batch_size: int, seed: int = 0, position: int = 0) -> None:
        if batch_size < 1 or n_items < batch_size:
            raise ValueError(f"need at least one full batch: {n_items} items, batch_size {batch_size}")
        self.n_items, self.batch_size, self.seed = int(n_items), int(batch_size), int(seed)
        self.per_epoch = self.n_items // self.batch_size
        self.position = 0
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)
        self.seek(position)

    def seek(self, position: int) -> None:
        """Make batch ``position`` (0-based over the endless stream) the next one handed out."""
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self.position = int(position)

    def _order_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n_items, generator=generator)
        return self._order

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            epoch, index = divmod(self.position, self.per_epoch)
            start = index * self.batch_size
            batch = self._order_of(epoch)[start : start + self.batch_size].tolist()
            self.position += 1
            yield batch
