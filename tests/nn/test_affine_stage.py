"""The global stage on the network grid (bidsreg.nn.affine_stage): the guard and the
log-Euclidean mean of both directions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bidsreg.image import load_volume
from bidsreg.nn.affine_stage import global_world_map, mean_world_map
from bidsreg.nn.augment import rotation_matrix
from bidsreg.nn.grid import NetworkGrid, prepare_image, translation
from bidsreg.nn.layers import grid_frame
from bidsreg.nn.model import RegistrationModel
from bidsreg.transform import Transform


def _network_predicting(model: RegistrationModel, theta: np.ndarray) -> None:
    """Make the global network output ``theta`` for any input (every pass: identity after)."""
    model.affine_net.config["passes"] = 1
    with torch.no_grad():
        model.affine_net.out.bias.copy_(torch.from_numpy((theta - np.eye(3, 4)).ravel()))


def _theta_of(grid, world_map: np.ndarray) -> np.ndarray:
    """Inverse of NetworkGrid.theta_to_world."""
    voxel_map = np.linalg.inv(grid.affine) @ world_map @ grid.affine
    centre, radius = grid_frame(grid.shape)
    c = np.asarray(centre)
    linear = voxel_map[:3, :3]
    return np.concatenate([linear, ((voxel_map[:3, 3] - c + linear @ c) / radius)[:, None]], axis=1)


def _global_stage_inputs(model: RegistrationModel, phantom_files):
    cfg = model.preprocess
    fixed, moving = (prepare_image(load_volume(phantom_files[key]), cfg) for key in ("fixed", "moving"))
    grid = NetworkGrid.covering(fixed, cfg)
    return grid, grid.resample(fixed), moving, translation(moving.centre - fixed.centre)


def test_global_stage_keeps_the_start_when_the_network_would_make_it_worse(phantom, phantom_files, known_map, untrained_model):
    """A network that predicts a 20° rotation is overruled; one that predicts the true
    affine is followed."""
    grid, fixed, moving, com = _global_stage_inputs(untrained_model, phantom_files)
    net = untrained_model.affine_net
    _network_predicting(untrained_model, np.concatenate([rotation_matrix((20, 0, 0)), np.zeros((3, 1))], 1))
    with torch.no_grad():
        assert np.array_equal(global_world_map(net, grid, fixed, moving, com), com)
    _network_predicting(untrained_model, _theta_of(grid, np.linalg.inv(com) @ known_map))
    with torch.no_grad():
        followed = global_world_map(net, grid, fixed, moving, com)
    points = phantom.brain_points(50)
    truth = Transform(known_map).map_points(points)
    error = {
        name: np.linalg.norm(Transform(value).map_points(points) - truth, axis=1).max()
        for name, value in (("com", com), ("network", followed))
    }
    assert error["com"] > 2.0 and error["network"] < 1e-6, error


def test_mean_world_map_is_symmetric_and_inverse_consistent():
    a = np.eye(4)
    a[:3, :3] = rotation_matrix((12, -5, 8)) @ np.diag([1.05, 0.97, 1.02])
    a[:3, 3] = (4.0, -3.0, 7.0)
    b = np.eye(4)
    b[:3, :3] = rotation_matrix((8, -1, 6)) @ np.diag([1.01, 0.99, 1.0])
    b[:3, 3] = (6.0, -1.0, 5.0)
    np.testing.assert_allclose(mean_world_map(a, a), a, atol=1e-10)
    np.testing.assert_allclose(mean_world_map(a, b), mean_world_map(b, a), atol=1e-10)
    inverse = mean_world_map(np.linalg.inv(a), np.linalg.inv(b))
    np.testing.assert_allclose(np.linalg.inv(mean_world_map(a, b)), inverse, atol=1e-10)
    # Half-way to the identity: applied twice, the mean is the map itself.
    mean = mean_world_map(a, np.eye(4))
    np.testing.assert_allclose(mean @ mean, a, atol=1e-10)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="too far apart"):
        mean_world_map(flip, np.eye(4))
