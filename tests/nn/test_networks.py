"""The two networks (bidsreg.nn.networks): shapes, start at the identity, shape checks."""
from __future__ import annotations

import pytest
import torch

from bidsreg.nn.layers import AffineTransformer, VecInt, compose_affine
from bidsreg.nn.networks import AffineNet, DeformableNet

SMALL_AFFINE = dict(features=(8, 8, 16), hidden=32)
SMALL_UNET = dict(encoder=(8, 8, 16, 16), decoder=(16, 16, 8, 8), head=(8,))


def pair(shape, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *shape, generator=g), torch.rand(batch, 1, *shape, generator=g)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- AffineNet


@pytest.mark.parametrize("shape", [(32, 48, 32), (48, 32, 64), (64, 64, 64)])
@pytest.mark.parametrize("training", [False, True])
def test_affine_net_starts_at_identity(shape, training):
    net = AffineNet(**SMALL_AFFINE).train(training)
    fixed, moving = pair(shape, batch=2)
    theta = net(fixed, moving)
    assert theta.shape == (2, 3, 4)
    assert torch.equal(theta, torch.eye(3, 4).expand(2, 3, 4))


def test_default_affine_net_starts_at_identity_on_a_brain_sized_grid():
    net = AffineNet().eval()
    fixed, moving = pair((64, 80, 64))
    assert torch.equal(net(fixed, moving), torch.eye(3, 4)[None])


@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 32, 32)])
def test_default_affine_net_refuses_too_small_grids_clearly(shape):
    net = AffineNet().eval()
    fixed, moving = pair(shape)
    with pytest.raises(ValueError, match="at least 64 voxels"):
        net(fixed, moving)


def test_affine_net_output_depends_on_the_pair_once_trained():
    """With a non-zero last layer the regression sees the images (head is wired in)."""
    net = AffineNet(**SMALL_AFFINE).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    fixed, moving = pair((32, 32, 48))
    assert not torch.allclose(net(fixed, moving), net(moving, fixed), atol=1e-4)


def test_affine_net_treats_batch_items_independently():
    net = AffineNet(**SMALL_AFFINE).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    fixed, moving = pair((32, 32, 32), batch=2)
    both = net(fixed, moving)
    single = torch.cat([net(fixed[i : i + 1], moving[i : i + 1]) for i in range(2)])
    assert torch.allclose(both, single, atol=1e-5)


def test_affine_net_config_rebuilds_the_same_architecture():
    net = AffineNet(features=(8, 16, 16, 16), hidden=64, norm=False, pool=1, passes=3)
    copy = AffineNet(**net.config)
    assert net.config == {"features": [8, 16, 16, 16], "hidden": 64, "norm": False, "pool": 1, "passes": 3}
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in copy.state_dict().items()}
    copy.load_state_dict(net.state_dict())


def test_affine_net_cascade_refines_the_previous_pass():
    """Pass 2 reads the moving image warped by pass 1, and the result composes both."""
    net = AffineNet(**SMALL_AFFINE, passes=2).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)
    fixed, moving = pair((32, 48, 32))
    low_fixed, low_moving = net.downsample(fixed), net.downsample(moving)
    first = net.step(low_fixed, low_moving)
    second = net.step(low_fixed, AffineTransformer()(low_moving, first))
    thetas = net.cascade(low_fixed, low_moving)
    assert len(thetas) == 2 and torch.allclose(thetas[0], first)
    assert torch.allclose(thetas[1], compose_affine(first, second), atol=1e-6)
    assert torch.allclose(net(fixed, moving), thetas[1])
    assert not torch.allclose(thetas[1], first, atol=1e-4)


def test_affine_net_reads_pooled_inputs():
    net = AffineNet(**SMALL_AFFINE, pool=2, passes=1).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)
    fixed, moving = pair((32, 48, 32))
    pooled = [torch.nn.functional.avg_pool3d(x, 2) for x in (fixed, moving)]
    assert torch.equal(net.downsample(fixed), pooled[0])
    assert torch.allclose(net(fixed, moving), net.step(*pooled))


@pytest.mark.parametrize("pool, passes", [(0, 1), (1, 0)])
def test_affine_net_rejects_bad_pool_or_passes(pool, passes):
    with pytest.raises(ValueError, match="pool and passes"):
        AffineNet(pool=pool, passes=passes)


# ---------------------------------------------------------------- DeformableNet


@pytest.mark.parametrize("shape", [(16, 32, 48), (32, 32, 16)])
def test_deformable_net_outputs_a_near_zero_field_at_init(shape):
    net = DeformableNet(**SMALL_UNET)
    fixed, moving = pair(shape, batch=2)
    field = net(fixed, moving)
    assert field.shape == (2, 3, *shape)
    assert field.abs().max() < 1e-2
    assert field.abs().max() > 0  # small random init, not exactly zero (gradients flow)


@pytest.mark.parametrize("shape", [(20, 32, 32), (32, 24, 32), (32, 32, 8)])
def test_deformable_net_rejects_grids_not_multiple_of_16(shape):
    fixed, moving = pair(shape)
    with pytest.raises(ValueError, match="multiples of 16"):
        DeformableNet(**SMALL_UNET)(fixed, moving)


def test_deformable_net_multiple_follows_its_depth():
    net = DeformableNet(encoder=(8, 8, 8), decoder=(8, 8, 8), head=())
    fixed, moving = pair((24, 16, 8))
    assert net(fixed, moving).shape == (1, 3, 24, 16, 8)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(*pair((12, 16, 8)))


def test_deformable_net_rejects_mismatched_depths():
    with pytest.raises(ValueError, match="same depth"):
        DeformableNet(encoder=(8, 8, 8), decoder=(8, 8))


def test_deformable_net_gradients_reach_every_layer():
    net = DeformableNet(**SMALL_UNET)
    net(*pair((16, 16, 16))).pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_diffeomorphic_deformable_net_integrates_its_velocity():
    net = DeformableNet(**SMALL_UNET, diffeomorphic=True, integration_steps=5)
    assert isinstance(net.integrate, VecInt) and net.integrate.steps == 5
    fixed, moving = pair((16, 32, 16))
    # A larger output layer so that integration visibly differs from the raw velocity.
    torch.nn.init.normal_(net.flow.weight, std=0.05)
    velocity = net.velocity(fixed, moving)
    field = net(fixed, moving)
    assert field.shape == velocity.shape == (1, 3, 16, 32, 16)
    assert torch.allclose(field, VecInt(5)(velocity), atol=1e-6)
    assert not torch.allclose(field, velocity, atol=1e-4)


def test_diffeomorphic_deformable_net_starts_near_zero():
    net = DeformableNet(**SMALL_UNET, diffeomorphic=True)
    field = net(*pair((16, 16, 32)))
    assert field.shape == (1, 3, 16, 16, 32)
    assert field.abs().max() < 1e-2


def test_plain_deformable_net_returns_its_velocity():
    net = DeformableNet(**SMALL_UNET)
    assert net.integrate is None
    fixed, moving = pair((16, 16, 16))
    assert torch.equal(net(fixed, moving), net.velocity(fixed, moving))


def test_deformable_net_config_rebuilds_the_same_architecture():
    net = DeformableNet(**SMALL_UNET, diffeomorphic=True, integration_steps=4)
    copy = DeformableNet(**net.config)
    assert copy.config == net.config
    copy.load_state_dict(net.state_dict())
    fixed, moving = pair((16, 16, 16))
    assert torch.equal(copy(fixed, moving), net(fixed, moving))
