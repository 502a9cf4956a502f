"""Running observation normalisation, stored as buffers so it travels inside a state_dict."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ObservationNormalizer(nn.Module):
    """Normalise observations by a running mean and variance, then clip.

    Statistics are merged batch by batch with the parallel form of Welford's algorithm (Chan et
    al.), accumulated in float64 so that millions of samples do not drift. Before the first
    ``update`` the mean is 0 and the variance 1, so the module is (almost) the identity.

    ``frozen`` stops ``update`` from changing anything: use it after a pre-pass, or at
    deployment. It is a plain attribute, not saved in the state_dict. Observations listed in
    ``fixed`` keep mean 0 and variance 1 (passed through, only clipped): the saved buffers say
    so, and a deployed policy needs nothing else.
    """

    def __init__(self, num_obs: int, clip: float = 10.0, epsilon: float = 1e-8,
                 fixed: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.num_obs = num_obs
        self.clip = clip
        self.epsilon = epsilon
        self.frozen = False
        self.fixed = list(fixed)
        if any(not 0 <= i < num_obs for i in self.fixed):
            raise ValueError(f"fixed: indices {self.fixed} outside 0..{num_obs - 1}")
        self.register_buffer("mean", torch.zeros(num_obs, dtype=torch.float64))
        self.register_buffer("var", torch.ones(num_obs, dtype=torch.float64))
        # A float so it never overflows and merges without casts; 0-d so it saves as-is.
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor | np.ndarray) -> None:
        """Merge a batch of raw observations (..., num_obs) into the running statistics."""
        if self.frozen:
            return
        x = torch.as_tensor(batch, device=self.mean.device).reshape(-1, self.num_obs).double()
        n_batch = x.shape[0]
        if n_batch == 0:
            return
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        n_total = self.count + n_batch
        delta = batch_mean - self.mean
        # Sum of squared deviations of the union = both parts' own + the spread between means.
        m2 = (
            self.var * self.count
            + batch_var * n_batch
            + delta.square() * self.count * n_batch / n_total
        )
        self.mean += delta * (n_batch / n_total)
        self.var.copy_(m2 / n_total)
        self.count.copy_(n_total)
        if self.fixed:
            self.mean[self.fixed] = 0.0
            self.var[self.fixed] = 1.0

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalise raw observations (..., num_obs); returns obs.dtype, clipped to ±clip."""
        mean = self.mean.to(obs.dtype)
        std = torch.sqrt(self.var + self.epsilon).to(obs.dtype)
        return ((obs - mean) / std).clamp(-self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"num_obs={self.num_obs}, clip={self.clip}, frozen={self.frozen}"
