"""Which training samples each iteration draws: a pure function of the iteration, for exact resume."""

from __future__ import annotations

from torch.utils.data import Sampler


class SampleStream(Sampler):
    """Global sample numbers for iterations ``start..total-1``: rank ``r`` of ``w`` takes, at iteration
    ``i``, samples ``(i*w + r)*b .. (i*w + r)*b + b - 1``. The union over ranks is what a single
    process with batch ``w*b`` would draw."""

    def __init__(self, start: int, total: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.total, self.batch_size, self.rank, self.world_size = start, total, batch_size, rank, world_size

    def __iter__(self):
        for it in range(self.start, self.total):
            base = (it * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch_size
