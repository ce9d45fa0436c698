"""Volume geometry, file I/O and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spineai.errors import SpineAIError
from spineai.image import (
    Volume, dice, mask_from_labelmap, read_volume, require_finite, require_same_geometry, seed_to_index,
    write_volume,
)

OBLIQUE = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _volume(shape=(6, 7, 8), spacing=(0.8, 0.9, 3.0), origin=(12.0, -30.0, 55.0), direction=OBLIQUE):
    arr = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    return Volume(arr, spacing, origin, direction)


def test_ras_ijk_round_trip_and_matches_sitk():
    vol = _volume()
    ijk = np.array([3.0, 2.0, 5.0])
    ras = vol.ijk_to_ras(ijk)
    np.testing.assert_allclose(vol.ras_to_ijk(ras), ijk, atol=1e-9)
    lps = vol.to_sitk().TransformContinuousIndexToPhysicalPoint(tuple(ijk))
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)


def test_sitk_round_trip_keeps_voxels_and_geometry():
    vol = _volume()
    back = Volume.from_sitk(vol.to_sitk())
    assert back.same_geometry(vol)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_write_read_round_trip(tmp_path, ext):
    vol = _volume()
    path = write_volume(vol, tmp_path / f"v{ext}")
    back = read_volume(path)
    assert back.same_geometry(vol)
    np.testing.assert_array_equal(back.array, vol.array)


def test_write_refuses_existing_file_and_keeps_it(tmp_path):
    path = tmp_path / "v.nii.gz"
    path.write_bytes(b"precious")
    with pytest.raises(SpineAIError, match="already exists; pass --overwrite"):
        write_volume(_volume(), path)
    assert path.read_bytes() == b"precious"
    write_volume(_volume(), path, overwrite=True)
    assert read_volume(path).array.shape == (6, 7, 8)


def test_write_unknown_extension(tmp_path):
    with pytest.raises(SpineAIError, match="unknown volume format"):
        write_volume(_volume(), tmp_path / "v.png")


@pytest.mark.parametrize("shape, dims", [((5, 5), 2), ((2, 3, 4, 5), 4)])
def test_not_3d_is_refused(shape, dims):
    with pytest.raises(SpineAIError, match=f"expected a 3D volume, got an array with {dims} dimension"):
        Volume(np.zeros(shape))


def test_2d_and_vector_files_are_refused(tmp_path):
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(SpineAIError, match="expected a 3D image, got a 2D image"):
        read_volume(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(SpineAIError, match="expected a scalar image, got 3 components per voxel"):
        read_volume(tmp_path / "rgb.nrrd")


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(SpineAIError, match="no such file or folder"):
        read_volume(tmp_path / "absent.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(SpineAIError, match="cannot read .*broken.nii.gz as an image"):
        read_volume(bad)


def _write_dicom_series(folder, vol: Volume, series_uid: str):
    folder.mkdir(parents=True, exist_ok=True)
    image = vol.to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        pos = image.TransformIndexToPhysicalPoint((0, 0, k))
        d = image.GetDirection()
        for tag, value in {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": series_uid,
            "0020|0032": "\\".join(f"{p:.6f}" for p in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0013": str(k + 1), "0028|0030": f"{vol.spacing[1]:.6f}\\{vol.spacing[0]:.6f}",
            "0018|0050": f"{vol.spacing[2]:.6f}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-4:]}_{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder(tmp_path):
    vol = Volume(np.random.default_rng(0).integers(0, 900, (5, 6, 7)).astype(np.int16), (0.7, 0.7, 2.5),
                 (10.0, -20.0, 30.0), np.eye(3))
    _write_dicom_series(tmp_path / "series", vol, "1.2.826.0.1.3680043.2.1125.2.1001")
    back = read_volume(tmp_path / "series")
    assert back.same_geometry(vol, tol=1e-3)
    np.testing.assert_array_equal(back.array, vol.array)

    _write_dicom_series(tmp_path / "series", vol, "1.2.826.0.1.3680043.2.1125.2.1002")
    with pytest.raises(SpineAIError, match="holds 2 DICOM series; choose one"):
        read_volume(tmp_path / "series")
    assert read_volume(tmp_path / "series", series_uid="1.2.826.0.1.3680043.2.1125.2.1002").array.shape == (5, 6, 7)


def test_unreadable_dicom_folder(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "IM0001.dcm").write_bytes(b"\x00" * 200 + b"garbage")
    with pytest.raises(SpineAIError, match="holds no readable DICOM series"):
        read_volume(tmp_path / "junk")


def test_seed_to_index_ras_and_ijk():
    vol = _volume()
    ras = vol.ijk_to_ras((4, 3, 2))
    assert seed_to_index(vol, ras) == (4, 3, 2)
    assert seed_to_index(vol, (4, 3, 2), "ijk") == (4, 3, 2)


def test_seed_outside_image():
    vol = _volume()
    far = vol.ijk_to_ras((40, 3, 2))
    with pytest.raises(SpineAIError, match=r"the seed at RAS .* lies outside the image \(\(8, 7, 6\) voxels"):
        seed_to_index(vol, far)
    with pytest.raises(SpineAIError, match="lies outside the image"):
        seed_to_index(vol, (0, 0, 6), "ijk")
    with pytest.raises(SpineAIError, match="three finite coordinates"):
        seed_to_index(vol, (0, np.nan, 1))


def test_nan_voxels_named():
    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    with pytest.raises(SpineAIError, match=r"1 NaN or infinite voxel\(s\), the first at voxel \(i, j, k\) = \(3, 2, 1\)"):
        require_finite(Volume(arr))


def test_geometry_mismatch_message():
    a = _volume()
    b = Volume(a.array, (0.8, 0.9, 2.0), a.origin, a.direction)
    with pytest.raises(SpineAIError, match="the mask does not have the image's geometry"):
        require_same_geometry(a, b)


def test_mask_from_labelmap_errors():
    labels = Volume(np.array([[[0, 3, 3], [0, 5, 0]]] * 2))
    assert mask_from_labelmap(labels, 3).sum() == 4
    with pytest.raises(SpineAIError, match="label 4 is absent from the mask; labels present: 3, 5"):
        mask_from_labelmap(labels, 4)
    with pytest.raises(SpineAIError, match="the mask is empty"):
        mask_from_labelmap(Volume(np.zeros((2, 2, 2))))


def test_dice():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_nifti_reads_the_same_without_simpleitk(monkeypatch, tmp_path):
    """Where SimpleITK is missing (a bare GPU training machine) NIfTI reads through nibabel with the
    same voxels, type and LPS geometry; other formats say what they need."""
    import sys

    import SimpleITK as sitk

    from shared_data import shared_data_path

    rot = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0], [-0.8, 0.6, 0.0]])  # oblique, permuted axes
    ours = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), (0.7, 1.3, 3.0), (10.0, -20.0, 5.5), rot)
    files = [write_volume(ours, tmp_path / "oblique.nii.gz")]
    try:
        files.append(shared_data_path("spine-mr-bodies", "VB2_09_img.nii.gz"))
    except BaseException:  # the shared data is absent in a user's clone: the written file still tests it
        pass
    with_sitk = [read_volume(f) for f in files]
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    for f, a in zip(files, with_sitk):
        b = read_volume(f)
        assert b.array.dtype == a.array.dtype and np.array_equal(b.array, a.array)
        np.testing.assert_allclose(b.spacing, a.spacing, atol=1e-5)
        np.testing.assert_allclose(b.origin, a.origin, atol=1e-4)
        np.testing.assert_allclose(b.direction, a.direction, atol=1e-5)
    nrrd = tmp_path / "x.nrrd"
    sitk.WriteImage(sitk.Image(3, 3, 3, sitk.sitkUInt8), str(nrrd))
    with pytest.raises(SpineAIError, match="needs SimpleITK"):
        read_volume(nrrd)
