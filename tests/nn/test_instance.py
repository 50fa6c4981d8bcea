"""Instance optimisation of a velocity field (bidsreg.nn.instance)."""
from __future__ import annotations

import pytest
import torch

from bidsreg.nn.instance import VelocityOptimisation, integrate_velocity, optimise_velocity
from bidsreg.nn.layers import SpatialTransformer, identity_grid, sample

SHAPE = (32, 32, 32)


def _texture() -> torch.Tensor:
    """(1, 1, 32, 32, 32) image: smoothed noise (structure at every voxel, as a brain's), in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((1, 1, *SHAPE), generator=generator)
    for _ in range(3):
        image = torch.nn.functional.avg_pool3d(image, 5, stride=1, padding=2, count_include_pad=False)
    return (image - image.min()) / (image.max() - image.min())


def _true_velocity() -> torch.Tensor:
    """A smooth velocity of about 2 voxels."""
    grid = identity_grid(SHAPE)[0] / SHAPE[0]
    x, y, z = grid
    v = torch.stack([2.0 * torch.sin(2 * torch.pi * y), 1.5 * torch.cos(2 * torch.pi * z), 1.5 * torch.sin(2 * torch.pi * x)])
    return v[None]


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    fixed = _texture()
    moving = SpatialTransformer()(fixed, integrate_velocity(-_true_velocity()))  # so that moving ∘ exp(v) = fixed
    return fixed, moving


def test_optimisation_lowers_the_loss_and_aligns_the_pair(pair):
    torch.manual_seed(0)
    fixed, moving = pair
    config = VelocityOptimisation(factors=(2, 1), iterations=(60, 30), lr=0.2, regularisation=0.1, window=7)
    velocity, trace = optimise_velocity(fixed, moving, None, config)
    assert [level.factor for level in trace] == [2, 1]
    assert trace[0].last_loss < trace[0].first_loss and trace[1].last_loss < trace[1].first_loss
    warped = SpatialTransformer()(moving, integrate_velocity(velocity))
    before, after = (fixed - moving).abs().mean(), (fixed - warped).abs().mean()
    assert after < 0.5 * before
    assert (velocity - _true_velocity()).abs().mean() < 0.5 * _true_velocity().abs().mean()  # near the truth


def test_a_start_is_kept_by_zero_iterations_and_continued_otherwise(pair):
    fixed, moving = pair
    start = _true_velocity()
    kept, trace = optimise_velocity(fixed, moving, start, VelocityOptimisation(iterations=(0, 0), smoothing=0))
    assert trace == () and torch.equal(kept, start)
    config = VelocityOptimisation(factors=(1,), iterations=(10,), lr=0.05, regularisation=0.1, window=7)
    _, trace = optimise_velocity(fixed, moving, start, config)
    # from the true velocity the loss starts low and stays low
    _, from_zero = optimise_velocity(fixed, moving, None, config)
    assert trace[0].first_loss < from_zero[0].first_loss


def test_the_inverse_is_the_integration_of_minus_v(pair):
    """exp(-v) ∘ exp(v) is the identity: 95th percentile of the residual below 0.25 voxel
    (0.5 mm on the 2 mm network grid)."""
    velocity = _true_velocity() * 1.5
    forward, inverse = integrate_velocity(velocity), integrate_velocity(-velocity)
    there = identity_grid(SHAPE) + forward
    back = there + sample(inverse, there, padding_mode="border")
    residual = (back - identity_grid(SHAPE)).norm(dim=1)[0, 4:-4, 4:-4, 4:-4]
    assert torch.quantile(residual.flatten(), 0.95) < 0.25


@pytest.mark.parametrize("changes, message", [
    (dict(factors=(1, 2), iterations=(1, 1)), "coarse to fine"),
    (dict(factors=(2, 1), iterations=(1,)), "one value per level"),
    (dict(iterations=(-1, 1)), "iterations must be >= 0"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(window=4), "positive odd"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        VelocityOptimisation(**changes)


def test_a_grid_the_levels_cannot_pool_is_refused():
    image = torch.zeros((1, 1, 30, 32, 32))
    with pytest.raises(ValueError, match="not divisible by the level factor 4"):
        optimise_velocity(image, image, None, VelocityOptimisation(factors=(4, 1), iterations=(1, 1)))
