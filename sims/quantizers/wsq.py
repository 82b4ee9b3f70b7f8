"""Weight-sharing quantization (000 §4.2): k-means of a trained full-precision phase map
into K shared values, then the post-processing that makes them displayable.

The clusters are chosen by the data, not by the device: ``wsq-raw`` evaluates them as
they are (ideal unit-amplitude phasors, not deployable: 000's "WSQ w/o
post-processing"). ``wsq`` post-processes as 000 describes: every shared value below
the device's lowest phase is truncated to the first level, every other one is mapped
to the device level nearest in raw phase (values above the range take the last
level). The phase map is *not* wrapped first — the method is unaware that phase is
periodic, which is exactly the physical unawareness 000 blames for its loss.
"""

from __future__ import annotations

import torch

from sims.quantizers.base import register
from sims.quantizers.full import FullPrecision

KMEANS_ITERATIONS = 30


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = KMEANS_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm on a 1-D tensor, initialised at quantiles (deterministic).
    Returns (centroids ``(k,)`` sorted, assignment per value)."""
    v = values.detach().flatten().double()
    qs = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    centroids = torch.quantile(v, qs)
    assign = torch.zeros_like(v, dtype=torch.int64)
    for _ in range(iterations):
        assign = (v[:, None] - centroids).abs().argmin(dim=1)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).double()
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        if torch.allclose(new, centroids):
            break
        centroids = new
    order = torch.argsort(centroids)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    return centroids[order], rank[assign].reshape(values.shape)


@register
class WeightSharing(FullPrecision):
    name = "wsq"
    quantized = True

    def clusters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return kmeans_1d(self.phase, self.levels.k)

    def post_process(self, centroids: torch.Tensor) -> torch.Tensor:
        """Level index of each shared value (see module docstring)."""
        level_phase = self.level_phase.double()
        idx = (centroids[:, None] - level_phase).abs().argmin(dim=1)
        return torch.where(centroids < level_phase[0], torch.zeros_like(idx), idx)

    def hard_indices(self) -> torch.Tensor:
        with torch.no_grad():
            centroids, assign = self.clusters()
            return self.post_process(centroids)[assign]


@register
class WeightSharingRaw(WeightSharing):
    name = "wsq-raw"
    quantized = False  # the shared values themselves: a reference, not a deployable map

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            return super().polar()
        centroids, assign = self.clusters()
        return torch.ones(self.shape), centroids[assign].float()
