"""Random augmentation: seeded, bounded affine maps (bidsreg.nn.augment)."""
from __future__ import annotations

import numpy as np
import torch

from bidsreg.nn.augment import gamma, random_affine, rotation_matrix


def test_random_affine_is_seeded_and_bounded():
    centre = np.array([10.0, -20.0, 30.0])
    a = random_affine(torch.Generator().manual_seed(3), centre, 10.0, 0.1, 5.0)
    b = random_affine(torch.Generator().manual_seed(3), centre, 10.0, 0.1, 5.0)
    c = random_affine(torch.Generator().manual_seed(4), centre, 10.0, 0.1, 5.0)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.array_equal(a[3], [0, 0, 0, 1])
    singular = np.linalg.svd(a[:3, :3], compute_uv=False)
    assert np.all(singular > 0.9 - 1e-9) and np.all(singular < 1.1 + 1e-9)
    # About the centre: the centre moves by the translation alone (at most 5 mm per axis).
    assert np.all(np.abs(a[:3, :3] @ centre + a[:3, 3] - centre) <= 5.0 + 1e-9)


def test_random_affine_without_augmentation_is_identity():
    matrix = random_affine(torch.Generator().manual_seed(0), np.array([1.0, 2.0, 3.0]), 0.0, 0.0, 0.0)
    assert np.allclose(matrix, np.eye(4), atol=1e-12)


def test_rotation_matrix_is_a_rotation_about_each_axis_in_turn():
    matrix = rotation_matrix((90.0, 0.0, 0.0))
    np.testing.assert_allclose(matrix @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)
    combined = rotation_matrix((10.0, -20.0, 30.0))
    np.testing.assert_allclose(combined.T @ combined, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(combined, rotation_matrix((0, 0, 30.0)) @ rotation_matrix((0, -20.0, 0))
                               @ rotation_matrix((10.0, 0, 0)), atol=1e-12)


def test_gamma_is_seeded_and_keeps_zero_and_one():
    image = torch.tensor([0.0, 0.25, 1.0, -0.5])
    a = gamma(image, torch.Generator().manual_seed(0), 0.3)
    b = gamma(image, torch.Generator().manual_seed(0), 0.3)
    assert torch.equal(a, b) and a[0] == 0 and a[2] == 1 and a[3] == 0
    assert torch.equal(gamma(image, torch.Generator().manual_seed(0), 0.0), image.clamp(min=0))
