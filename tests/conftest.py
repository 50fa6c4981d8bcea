"""Shared fixtures: a tiny synthetic brain phantom written with nibabel, and small trained models.

The phantom is defined analytically in RAS+ millimetres (an ellipsoid "brain" with blobs of
other intensities), so the same world content can be sampled on any voxel grid (flipped,
oblique) and moved by a known world map without resampling artefacts. Images are 40x48x40
voxels of 3 mm; with ``PreprocessConfig(spacing=4.0)`` the network grid is 32x48x32.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
import torch

from bidsreg.image import Volume
from bidsreg.methods.training import train_model
from bidsreg.nn.augment import rotation_matrix
from bidsreg.nn.grid import PreprocessConfig
from bidsreg.nn.model import RegistrationModel
from bidsreg.nn.train import TrainConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))


class Phantom:
    """An analytic T1-like brain: a smooth ellipsoid of grey level 0.5 with five blobs.

    Everything is in RAS+ mm with the brain centred on the origin. Images are sampled at voxel
    centres: ``image(v) = intensity(T^-1(affine @ v))`` for a world map ``T`` (fixed -> moving
    world, bidsreg's convention), so that ``moving(T(x)) = fixed(x)``.
    """

    SHAPE = (40, 48, 40)
    SPACING = 3.0
    RADII = np.array([42.0, 52.0, 38.0])
    BLOBS = (  # centre (mm), sigma (mm), amplitude
        ((-18.0, 10.0, 8.0), 7.0, 0.45),
        ((15.0, -20.0, -6.0), 9.0, -0.3),
        ((5.0, 25.0, -12.0), 6.0, 0.35),
        ((-10.0, -30.0, 15.0), 5.0, 0.5),
        ((22.0, 12.0, 14.0), 6.0, -0.25),
    )

    @classmethod
    def intensity(cls, points: np.ndarray) -> np.ndarray:
        """Phantom intensity (about 0..1000) at (..., 3) RAS+ mm points."""
        p = np.asarray(points, dtype=np.float64)
        radius = np.sqrt(((p / cls.RADII) ** 2).sum(-1))
        value = 0.5 / (1.0 + np.exp(np.clip((radius - 1.0) * 20.0, -50, 50)))
        for centre, sigma, amplitude in cls.BLOBS:
            value = value + amplitude * np.exp(-((p - np.array(centre)) ** 2).sum(-1) / (2 * sigma**2))
        return (1000.0 * np.clip(value, 0.0, None)).astype(np.float32)

    @staticmethod
    def deformation(points: np.ndarray, amplitude: float = 4.0) -> np.ndarray:
        """A smooth displacement (..., 3) in mm, at most ``amplitude`` mm, gradient < 0.2."""
        x, y, z = (points[..., i] for i in range(3))
        return amplitude * np.stack(
            [np.sin(y / 20.0 + 0.3), np.cos(z / 22.0 + x / 40.0), np.sin(x / 21.0 - 0.7)], axis=-1
        )

    @classmethod
    def affine(
        cls,
        shape: tuple[int, int, int] | None = None,
        spacing: float | tuple[float, float, float] | None = None,
        orientation: str = "RAS",
        degrees: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> np.ndarray:
        """Voxel -> RAS+ affine of a grid centred on the origin.

        ``orientation`` names the direction each voxel axis points to (``"LAS"``: i runs to the
        left); ``degrees`` then tilts the axes (an oblique grid).
        """
        shape = cls.SHAPE if shape is None else shape
        spacing = np.broadcast_to(np.asarray(cls.SPACING if spacing is None else spacing, float), (3,))
        signs = [1.0 if letter in "RAS" else -1.0 for letter in orientation]
        affine = np.eye(4)
        affine[:3, :3] = rotation_matrix(degrees) @ np.diag(np.multiply(signs, spacing))
        affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
        return affine

    @staticmethod
    def world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """(X, Y, Z, 3) RAS+ mm of the voxel centres of a grid."""
        index = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
        return index @ affine[:3, :3].T + affine[:3, 3]

    @classmethod
    def source_points(
        cls,
        affine: np.ndarray | None = None,
        shape: tuple[int, int, int] | None = None,
        world_map: np.ndarray | None = None,
        deformed: bool = False,
    ) -> np.ndarray:
        """(X, Y, Z, 3) phantom coordinates (mm) seen at each voxel of a grid whose content is
        moved by ``world_map`` and, with ``deformed``, by :meth:`deformation`: the moving world
        content is ``f(u(T^-1 y))``, ``u(x) = x + d(x)``."""
        shape = cls.SHAPE if shape is None else shape
        affine = cls.affine(shape) if affine is None else affine
        points = cls.world(shape, affine)
        if world_map is not None:
            inverse = np.linalg.inv(world_map)
            points = points @ inverse[:3, :3].T + inverse[:3, 3]
        if deformed:
            points = points + cls.deformation(points)
        return points

    @classmethod
    def image(cls, affine=None, shape=None, world_map=None, deformed: bool = False) -> np.ndarray:
        """The phantom sampled on a grid, moved by ``world_map`` and optionally deformed
        (see :meth:`source_points`)."""
        return cls.intensity(cls.source_points(affine, shape, world_map, deformed))

    @classmethod
    def labels(cls, affine=None, shape=None, world_map=None, deformed: bool = False) -> np.ndarray:
        """A label map of the same content: the brain's eight octants (1-8) and two blobs (9, 10)."""
        p = cls.source_points(affine, shape, world_map, deformed)
        inside = np.sqrt(((p / cls.RADII) ** 2).sum(-1)) < 1.0
        labels = (1 + (p[..., 0] > 0) + 2 * (p[..., 1] > 0) + 4 * (p[..., 2] > 0)) * inside
        for value, (centre, sigma, _) in zip((9, 10), cls.BLOBS[:2]):
            labels[(((p - np.array(centre)) ** 2).sum(-1) < sigma**2) & inside] = value
        return labels.astype(np.int16)

    @classmethod
    def true_map(cls, points: np.ndarray, world_map: np.ndarray, deformed: bool = False) -> np.ndarray:
        """Where fixed points ``x`` (N, 3) lie in the moving image made by :meth:`image`:
        ``T(u^-1(x))``, with ``u^-1`` found by fixed-point iteration."""
        z = np.array(points, dtype=np.float64)
        if deformed:
            for _ in range(60):
                z = points - cls.deformation(z)
        return z @ world_map[:3, :3].T + world_map[:3, 3]

    @classmethod
    def volume(cls, **kwargs) -> Volume:
        affine = kwargs.get("affine")
        affine = cls.affine(kwargs.get("shape")) if affine is None else affine
        return Volume(cls.image(**{**kwargs, "affine": affine}), affine, "phantom")

    @classmethod
    def brain_points(cls, n: int = 200, seed: int = 0, fraction: float = 0.7) -> np.ndarray:
        """(n, 3) random RAS+ mm points inside the ellipsoid scaled by ``fraction``."""
        rng = np.random.default_rng(seed)
        points = rng.normal(size=(n, 3))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        points *= rng.uniform(0, 1, (n, 1)) ** (1 / 3)
        return points * cls.RADII * fraction

    @staticmethod
    def write(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> str:
        """Write a NIfTI with nibabel (sform and qform set) and return its path as str."""
        img = nb.Nifti1Image(np.asarray(data), affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        nb.save(img, str(path))
        return str(path)


#: The known world map (fixed -> moving) of the phantom pair: 8 degrees about one axis and a
#: few about the others, a 4 mm shift and up to 5 % scaling.
KNOWN_MAP = np.eye(4)
KNOWN_MAP[:3, :3] = rotation_matrix((3.0, -8.0, 4.0)) @ np.diag([1.05, 0.97, 1.03])
KNOWN_MAP[:3, 3] = [2.5, -2.4, 2.0]  # |t| = 4 mm

#: The network grid spacing of every test (mm): 32x48x32 grids for the phantom.
GRID_SPACING = 4.0


@pytest.fixture(scope="session")
def phantom() -> type[Phantom]:
    return Phantom


@pytest.fixture(scope="session")
def known_map() -> np.ndarray:
    return KNOWN_MAP.copy()


@pytest.fixture(scope="session")
def preprocess_config() -> PreprocessConfig:
    return PreprocessConfig(spacing=GRID_SPACING)


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory) -> dict[str, str]:
    """NIfTI files: ``fixed`` (the phantom), ``moving`` (moved by :data:`KNOWN_MAP`) and
    ``deformed`` (moved by it and by a smooth deformation), all RAS 3 mm 40x48x40."""
    folder = tmp_path_factory.mktemp("phantom")
    affine = Phantom.affine()
    images = {
        "fixed": Phantom.image(affine),
        "moving": Phantom.image(affine, world_map=KNOWN_MAP),
        "deformed": Phantom.image(affine, world_map=KNOWN_MAP, deformed=True),
    }
    return {name: Phantom.write(folder / f"sub-{name}_T1w.nii.gz", data, affine) for name, data in images.items()}


def tiny_config(**changes) -> TrainConfig:
    """A TrainConfig with small networks on 4 mm grids; ``changes`` override fields."""
    values = dict(
        affine_steps=3,
        deformable_steps=3,
        affine_learning_rate=1e-3,
        learning_rate=1e-3,
        checkpoint_every=2,
        affine_features=(8, 16, 16),
        encoder=(8, 16, 16, 16),
        decoder=(16, 16, 16, 16),
        head=(8,),
        preprocess=PreprocessConfig(spacing=GRID_SPACING),
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def make_config():
    """Factory of small :class:`TrainConfig` s (see :func:`tiny_config`)."""
    return tiny_config


#: Stage-1 training that recovers an affine on the phantom pair (no augmentation: the network
#: only has to learn the two directed pairs it sees), on the 4 mm grid itself (no pooling).
AFFINE_TRAINING = dict(
    affine_steps=500,
    affine_pool=1,
    affine_learning_rate=1e-3,
    max_rotation=0.0,
    max_scaling=0.0,
    max_translation=0.0,
    fixed_max_rotation=0.0,
    fixed_max_scaling=0.0,
    fixed_max_translation=0.0,
    gamma_sd=0.0,
    checkpoint_every=10_000,
)


@pytest.fixture(scope="session")
def affine_training() -> dict:
    """TrainConfig fields of :data:`AFFINE_TRAINING`."""
    return dict(AFFINE_TRAINING)


@pytest.fixture(scope="session")
def trained_model(phantom_files, tmp_path_factory) -> RegistrationModel:
    """Both stages briefly trained on (fixed, deformed); about 20 s on two CPU threads."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    config = tiny_config(**{**AFFINE_TRAINING, "affine_steps": 300}, deformable_steps=40, smoothness=0.5)
    train_model([phantom_files["fixed"], phantom_files["deformed"]], path, config, device="cpu", progress=False)
    return RegistrationModel.from_checkpoint(path, device="cpu")


@pytest.fixture()
def untrained_model() -> RegistrationModel:
    """A model straight from initialisation (identity affine, ~0 displacement)."""
    from bidsreg.nn.networks import AffineNet, DeformableNet

    torch.manual_seed(0)
    config = tiny_config()
    return RegistrationModel(
        AffineNet(config.affine_features, pool=config.affine_pool, passes=config.affine_passes).eval(),
        DeformableNet(config.encoder, config.decoder, config.head).eval(),
        config.preprocess,
    )


#: World maps (fixed -> moving) of the phantom BIDS dataset's subjects (sub-01 is the phantom itself).
SUBJECT_MAPS = {"01": np.eye(4), "02": KNOWN_MAP, "03": np.eye(4)}
SUBJECT_MAPS["03"] = SUBJECT_MAPS["03"].copy()
SUBJECT_MAPS["03"][:3, :3] = rotation_matrix((-5.0, 6.0, -4.0)) @ np.diag([0.96, 1.04, 0.98])
SUBJECT_MAPS["03"][:3, 3] = [-4.0, 3.5, -3.0]


def make_bids_dataset(root: Path, subjects: dict[str, np.ndarray] = SUBJECT_MAPS) -> Path:
    """A tiny BIDS dataset of phantom brains (40x48x40 voxels of 3 mm, skull-stripped) with
    label maps in ``derivatives/manual`` (``desc-phantom_dseg``, with its lookup table)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "bidsreg phantom", "BIDSVersion": "1.9.0", "DatasetType": "raw", "Authors": ["bidsreg tests"]}))
    (root / "README").write_text("Synthetic phantom brains made by the bidsreg test suite.\n")
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    labels = root / "derivatives" / "manual"
    labels.mkdir(parents=True)
    (labels / "dataset_description.json").write_text(json.dumps({
        "Name": "phantom labels", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bidsreg tests"}]}))
    names = ["octant-" + "".join(axes) for axes in
             (("L", "P", "I"), ("R", "P", "I"), ("L", "A", "I"), ("R", "A", "I"),
              ("L", "P", "S"), ("R", "P", "S"), ("L", "A", "S"), ("R", "A", "S"))] + ["blob-1", "blob-2"]
    (labels / "desc-phantom_dseg.tsv").write_text(
        "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names, start=1)))
    affine = Phantom.affine()
    for subject, world_map in subjects.items():
        deformed = subject != "01"
        anat = root / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        Phantom.write(anat / f"sub-{subject}_T1w.nii.gz", Phantom.image(affine, world_map=world_map, deformed=deformed), affine)
        (anat / f"sub-{subject}_T1w.json").write_text(json.dumps({"SkullStripped": True}))
        out = labels / f"sub-{subject}" / "anat"
        out.mkdir(parents=True)
        Phantom.write(out / f"sub-{subject}_desc-phantom_dseg.nii.gz",
                      Phantom.labels(affine, world_map=world_map, deformed=deformed), affine)
    return root


@pytest.fixture(scope="session")
def bids_dataset(tmp_path_factory) -> Path:
    """The phantom BIDS dataset of :func:`make_bids_dataset` (read-only: copy it to change it)."""
    return make_bids_dataset(tmp_path_factory.mktemp("bids") / "phantom")
