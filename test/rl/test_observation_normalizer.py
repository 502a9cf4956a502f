"""ObservationNormalizer's running statistics, clipping and freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cassie_rl_ros.policies import ObservationNormalizer


def test_running_stats_match_numpy_over_several_batches():
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(loc=3.0, scale=2.0, size=(50, 4)),
        rng.normal(loc=-1.0, scale=0.5, size=(7, 4)),
        rng.normal(loc=10.0, scale=5.0, size=(200, 4)),
        rng.normal(size=(1, 4)),
    ]
    norm = ObservationNormalizer(4)
    for batch in batches:
        norm.update(torch.from_numpy(batch).float())
    data = np.concatenate([b.astype(np.float32).astype(np.float64) for b in batches])
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=1e-10, atol=1e-10)
    assert norm.count.item() == len(data)


def test_normalises_and_clips():
    norm = ObservationNormalizer(2, clip=3.0)
    norm.update(np.array([[0.0, 10.0], [2.0, 30.0]]))  # mean (1, 20), var (1, 100)
    out = norm(torch.tensor([[2.0, 30.0], [100.0, -1000.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0], [3.0, -3.0]]))
    assert out.dtype == torch.float32


def test_identity_before_any_update_and_frozen_ignores_updates():
    norm = ObservationNormalizer(3)
    x = torch.tensor([[0.5, -2.0, 1.0]])
    torch.testing.assert_close(norm(x), x)
    norm.frozen = True
    norm.update(np.full((10, 3), 5.0))
    assert norm.count.item() == 0
    torch.testing.assert_close(norm(x), x)


def test_statistics_are_state_dict_buffers():
    assert set(ObservationNormalizer(3).state_dict()) == {"mean", "var", "count"}


def test_fixed_scale_observations_pass_through_whatever_the_batches():
    norm = ObservationNormalizer(3, fixed=(1,))
    rng = np.random.default_rng(0)
    for scale in (0.3, 1.0):  # a command range that widens, as under a curriculum
        batch = rng.normal(5.0, 2.0, (256, 3))
        batch[:, 1] = rng.uniform(0.0, scale, 256)
        norm.update(batch)
    assert norm.mean[1] == 0.0 and norm.var[1] == 1.0
    assert abs(norm.mean[0].item() - 5.0) < 0.3  # the others are learned as before
    x = torch.tensor([[5.0, 0.8, 5.0]])
    assert norm(x)[0, 1].item() == pytest.approx(0.8)
    # What is saved says it all: a normaliser rebuilt from the state_dict does the same.
    plain = ObservationNormalizer(3)
    plain.load_state_dict(norm.state_dict())
    assert torch.equal(plain(x), norm(x))
    with pytest.raises(ValueError, match="outside"):
        ObservationNormalizer(3, fixed=(3,))
