"""Loading, checking and saving volumes (bidsreg.image) on tiny files written with nibabel."""
from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nb
import numpy as np
import pytest

from bidsreg import image as image_module
from bidsreg.image import Grid, Volume, check_brain, foreground_extent, load_volume, mask_box, save_volume


def affine(spacing=(2.0, 2.0, 2.0)) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def blob(shape=(10, 12, 8)) -> np.ndarray:
    index = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    return np.exp(-((index - centre) ** 2).sum(0) / 8).astype(np.float32) * 100


def write(path, data, matrix=None) -> str:
    nb.save(nb.Nifti1Image(data, affine() if matrix is None else matrix), str(path))
    return str(path)


def assert_value_error_names(path, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        load_volume(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- load_volume


def test_load_volume_reads_data_affine_and_path(tmp_path):
    data = blob()
    matrix = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 2.5, 10], [0, 0, 0, 1]])
    path = write(tmp_path / "img.nii.gz", data, matrix)
    volume = load_volume(path)
    assert volume.data.dtype == np.float32
    assert volume.shape == data.shape
    assert np.array_equal(volume.data, data)
    assert np.allclose(volume.affine, matrix)
    assert np.allclose(volume.spacing, [2.0, 2.0, 2.5])
    assert volume.path == path


def test_spacing_and_grid_of_an_oblique_volume():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([1.5, 2.0, 3.0])
    volume = Volume(np.zeros((4, 5, 6), np.float32), matrix)
    assert np.allclose(volume.spacing, [1.5, 2.0, 3.0])
    assert isinstance(volume.grid, Grid) and volume.grid.shape == (4, 5, 6) and volume.grid.affine is matrix


def test_load_volume_accepts_4d_with_one_volume(tmp_path):
    data = blob()
    volume = load_volume(write(tmp_path / "one.nii.gz", data[..., None]))
    assert volume.shape == data.shape and volume.data.ndim == 3
    assert np.array_equal(volume.data, data)


def test_load_volume_missing_file(tmp_path):
    message = assert_value_error_names(tmp_path / "absent.nii.gz")
    assert "no such file" in message


def test_load_volume_broken_links_say_the_target_is_missing(tmp_path):
    annexed = tmp_path / "sub-01_T1w.nii.gz"
    annexed.symlink_to("../.git/annex/objects/Xk/7G/MD5E-s123--abc.nii.gz/MD5E-s123--abc.nii.gz")
    message = assert_value_error_names(annexed)
    assert "which is missing" in message and "datalad get" in message
    plain = tmp_path / "sub-02_T1w.nii.gz"
    plain.symlink_to(tmp_path / "gone.nii.gz")
    message = assert_value_error_names(plain)
    assert "gone.nii.gz, which is missing" in message and "fix the link" in message


def test_load_volume_random_bytes(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(600))
    assert "cannot be read" in assert_value_error_names(path)


def test_load_volume_truncated_gzip(tmp_path):
    good = write(tmp_path / "good.nii.gz", blob((20, 20, 20)))
    raw = open(good, "rb").read()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    assert "cannot be read" in assert_value_error_names(path)


def truncated_plain_nifti(tmp_path) -> str:
    good = write(tmp_path / "good.nii", blob((20, 20, 20)))
    raw = open(good, "rb").read()
    path = tmp_path / "short.nii"
    path.write_bytes(raw[: len(raw) - 1000])
    return str(path)


def test_load_volume_truncated_data_in_plain_nifti(tmp_path):
    path = truncated_plain_nifti(tmp_path)
    with pytest.raises(ValueError, match="cannot be read") as info:
        load_volume(path)
    assert path in str(info.value)


def test_load_volume_error_for_truncated_plain_nifti_is_one_line(tmp_path):
    assert_value_error_names(truncated_plain_nifti(tmp_path))


def test_load_volume_not_a_nifti_but_gzip(tmp_path):
    path = tmp_path / "text.nii.gz"
    path.write_bytes(gzip.compress(b"hello, I am not an image" * 20))
    assert_value_error_names(path)


def test_load_volume_rejects_4d_with_several_volumes(tmp_path):
    data = np.stack([blob(), blob() * 2], axis=-1)
    assert "3D" in assert_value_error_names(write(tmp_path / "bold.nii.gz", data))


def test_load_volume_rejects_2d_slab(tmp_path):
    assert "too small" in assert_value_error_names(write(tmp_path / "slab.nii.gz", blob((10, 12, 1))))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_volume_rejects_non_finite(tmp_path, bad):
    data = blob()
    data[3, 4, 5] = bad
    assert "NaN or Inf" in assert_value_error_names(write(tmp_path / "nan.nii.gz", data))


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_load_volume_rejects_constant_image(tmp_path, value):
    data = np.full((8, 8, 8), value, dtype=np.float32)
    assert "constant" in assert_value_error_names(write(tmp_path / "flat.nii.gz", data))


def test_load_volume_accepts_constant_label_map(tmp_path):
    """Label maps are not intensity-checked (an all-background map is valid input)."""
    data = np.zeros((8, 8, 8), dtype=np.int16)
    volume = load_volume(write(tmp_path / "dseg.nii.gz", data), labels=True)
    assert volume.data.dtype == np.int32


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 8.0), (6.0, 1.0, 1.0)])
def test_load_volume_rejects_anisotropic_voxels(tmp_path, spacing):
    path = write(tmp_path / "thick.nii.gz", blob(), affine(spacing))
    assert "anisotropic" in assert_value_error_names(path)


def test_load_volume_accepts_moderate_anisotropy(tmp_path):
    volume = load_volume(write(tmp_path / "ok.nii.gz", blob(), affine((1.0, 1.0, 4.0))))
    assert np.allclose(volume.spacing, [1.0, 1.0, 4.0])


def test_load_volume_rejects_degenerate_affine(tmp_path):
    """A header whose sform squashes one axis (nibabel cannot write it, so patch the bytes)."""
    path = write(tmp_path / "flat_affine.nii", blob())
    raw = bytearray(open(path, "rb").read())
    header = nb.Nifti1Header.from_fileobj(open(path, "rb"))
    header["srow_z"] = [0.0, 0.0, 0.0, 0.0]
    header["sform_code"], header["qform_code"] = 1, 0
    raw[:348] = header.binaryblock
    open(path, "wb").write(bytes(raw))
    assert "affine" in assert_value_error_names(path)


def test_load_volume_rejects_non_integer_labels(tmp_path):
    data = np.zeros((8, 8, 8), dtype=np.float32)
    data[2:5, 2:5, 2:5] = 0.4  # a probability map, not labels
    message = assert_value_error_names(write(tmp_path / "prob.nii.gz", data), labels=True)
    assert "integer" in message


def test_load_volume_rejects_nan_labels(tmp_path):
    data = np.zeros((8, 8, 8), dtype=np.float32)
    data[1, 1, 1] = np.nan
    assert_value_error_names(write(tmp_path / "nanlab.nii.gz", data), labels=True)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_load_volume_reads_integer_valued_labels_as_int32(tmp_path, dtype):
    data = np.zeros((8, 8, 8), dtype=dtype)
    data[2:5, 2:5, 2:5] = 3
    data[5:7, 1:3, 0:2] = 7
    volume = load_volume(write(tmp_path / "dseg.nii.gz", data), labels=True)
    assert volume.data.dtype == np.int32
    assert np.array_equal(volume.data, data.astype(np.int32))


def test_load_volume_applies_scaling(tmp_path):
    """scl_slope/inter are applied: intensities come back in physical units."""
    data = (blob() / 10).astype(np.int16)
    img = nb.Nifti1Image(data, affine())
    img.header.set_slope_inter(2.0, 5.0)
    path = tmp_path / "scaled.nii.gz"
    nb.save(img, str(path))
    assert np.allclose(load_volume(path).data, data * 2.0 + 5.0)


# ---------------------------------------------------------------- save_volume


def test_save_volume_round_trip_and_leaves_no_temporary(tmp_path):
    matrix = np.array([[0.0, -2.0, 0, 10], [2.0, 0.0, 0, -4], [0, 0, 3.0, 1], [0, 0, 0, 1]])
    data = blob()
    target = tmp_path / "out.nii.gz"
    save_volume(target, data, matrix)
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]
    img = nb.load(str(target))
    assert np.array_equal(np.asanyarray(img.dataobj), data)
    assert np.allclose(img.affine, matrix)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.allclose(img.header.get_qform(), matrix, atol=1e-5)
    with open(target, "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"  # gzip, chosen from the .nii.gz name


def test_save_volume_keeps_label_dtype(tmp_path):
    data = np.zeros((6, 6, 6), dtype=np.int16)
    data[1:3, 1:3, 1:3] = 1035
    save_volume(tmp_path / "dseg.nii", data, affine())
    assert np.asanyarray(nb.load(str(tmp_path / "dseg.nii")).dataobj).dtype == np.int16


@pytest.mark.parametrize("dtype", [object, np.float16, bool])
def test_save_volume_unsupported_dtype_keeps_earlier_file(tmp_path, dtype):
    target = tmp_path / "out.nii.gz"
    save_volume(target, blob(), affine())
    before = target.read_bytes()
    with pytest.raises(Exception):
        save_volume(target, np.zeros((4, 4, 4), dtype=dtype), affine())
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]


def test_save_volume_failure_while_writing_keeps_earlier_file(tmp_path, monkeypatch):
    """A writer that dies half-way (disk full) leaves neither a partial file nor a temporary."""
    target = tmp_path / "out.nii.gz"
    save_volume(target, blob(), affine())
    before = target.read_bytes()
    written = []

    def failing_save(img, filename):
        with open(filename, "wb") as handle:
            handle.write(before[:50])
        written.append(str(filename))
        raise OSError("No space left on device")

    monkeypatch.setattr(image_module, "_write_nifti", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_volume(target, blob() * 2, affine())
    assert written and written[0] != str(target)  # it wrote beside the target, not onto it
    assert written[0].endswith(".nii.gz")  # keeping the suffix that selects the format
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]


def test_save_volume_first_write_failure_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(img, filename):
        open(filename, "wb").close()
        raise OSError("boom")

    monkeypatch.setattr(image_module, "_write_nifti", failing_save)
    with pytest.raises(OSError):
        save_volume(tmp_path / "new.nii.gz", blob(), affine())
    assert os.listdir(tmp_path) == []


def test_volume_shape_and_spacing_properties():
    volume = Volume(np.zeros((3, 4, 5), dtype=np.float32), affine((1.0, 2.0, 3.0)))
    assert volume.shape == (3, 4, 5)
    assert np.allclose(volume.spacing, [1.0, 2.0, 3.0])
    assert volume.path == ""


def test_foreground_extent_and_the_brain_check():
    data = np.zeros((40, 30, 20), np.float32)
    data[5:35, 5:25, 2:18] = 100.0
    volume = Volume(data, np.diag([2.0, 3.0, 4.0, 1.0]), "brain.nii.gz")
    assert foreground_extent(volume).tolist() == [60.0, 60.0, 64.0]
    check_brain(volume)
    data[:, :, 9:] = 0.0  # 7 slices of 4 mm left: a skull strip that cut the brain
    with pytest.raises(ValueError, match=r"brain.nii.gz: .* spans 60 x 60 x 28 mm, too small for a brain"):
        check_brain(Volume(data, volume.affine, volume.path))


def test_grid_cropped_is_the_same_voxels():
    grid = Grid((10, 12, 8), affine())
    part = grid.cropped(np.array([2, 3, 1]), np.array([7, 12, 5]))
    assert part.shape == (5, 9, 4)
    np.testing.assert_allclose(part.affine @ [0, 0, 0, 1], grid.affine @ [2, 3, 1, 1])
    np.testing.assert_allclose(part.affine[:3, :3], grid.affine[:3, :3])
    for start, stop in (([0, 0, 0], [11, 12, 8]), ([3, 0, 0], [3, 12, 8]), ([-1, 0, 0], [5, 5, 5])):
        with pytest.raises(ValueError, match="not a non-empty part"):
            grid.cropped(np.array(start), np.array(stop))


def test_saved_nii_gz_is_one_reproducible_gzip_member_that_every_reader_reads(tmp_path):
    import SimpleITK as sitk

    data = blob()
    for name in ("a.nii.gz", "b.nii.gz"):
        save_volume(tmp_path / name, data, affine())
    raw = (tmp_path / "a.nii.gz").read_bytes()
    assert raw == (tmp_path / "b.nii.gz").read_bytes()  # no time stamp in the gzip header
    stream = gzip.decompress(raw)
    assert _members(raw) == 1
    np.testing.assert_array_equal(nb.Nifti1Image.from_bytes(stream).get_fdata(dtype=np.float32), data)
    np.testing.assert_array_equal(load_volume(tmp_path / "a.nii.gz").data, data)
    itk_data = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz"))).transpose(2, 1, 0)
    np.testing.assert_array_equal(itk_data, data)


def _members(raw: bytes) -> int:
    """How many gzip members follow one another in ``raw``."""
    count = 0
    while raw:
        decoder = zlib.decompressobj(wbits=31)
        decoder.decompress(raw)
        raw, count = decoder.unused_data, count + 1
    return count


def test_mask_box_is_the_box_of_the_true_voxels():
    mask = np.zeros((6, 7, 5), bool)
    mask[1, 2:5, 4] = mask[3, 6, 0] = True
    start, stop = mask_box(mask)
    assert start.tolist() == [1, 2, 0] and stop.tolist() == [4, 7, 5]
    assert mask_box(np.zeros((3, 3, 3), bool)) is None
