"""Scoliosis radiographs: generated films with a known Cobb angle, the measured Cobb angle, and
reading films from DICOM (MONOCHROME1 included), pictures and NIfTI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spineai.errors import SpineAIError
from spineai.imaging.cobb import measure_cobb
from spineai.imaging.radiograph import radiograph_plane, read_radiograph
from spineai.imaging.radiograph_synth import (
    FRONTAL_DIRECTION, SCOLIOSIS_COBB_DEG, generate_radiograph, generated_split, sample_cobb,
)


# ---- generated films ----------------------------------------------------------------------------

@pytest.mark.parametrize("cobb", [0.0, 7.5, 10.0, 33.0, 60.0])
def test_generated_film_has_the_cobb_angle_asked_for(cobb):
    film = generate_radiograph(cobb, seed=3)
    assert film.image.shape == (256, 256) and film.image.dtype == np.float32
    assert 0 <= film.image.min() and film.image.max() <= 1
    assert film.cobb_deg == pytest.approx(cobb, abs=1e-6)
    assert np.ptp(film.vertebra_tilts_deg) == pytest.approx(cobb, abs=1e-6)
    assert film.scoliosis == (cobb >= SCOLIOSIS_COBB_DEG)
    upper, lower = film.end_vertebrae
    assert upper < lower if cobb else True
    # the vertebral centres lie on the drawn spine
    rows, cols = np.round(film.vertebra_centres).astype(int).T
    assert film.spine_mask[rows, cols].mean() >= 0.9


def test_generated_films_are_reproducible_and_varied():
    a, b, c = generate_radiograph(20, seed=1), generate_radiograph(20, seed=1), generate_radiograph(20, seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    assert np.abs(a.image - c.image).mean() > 0.02


def test_generated_split_has_the_study_prevalence():
    films = list(generated_split(250, 0.016, seed=4, size=128))
    labels = np.array([f.scoliosis for f in films])
    assert labels.sum() == 4  # round(250 * 0.016)
    assert all(f.image.shape == (128, 128) for f in films)
    assert all(f.cobb_deg < SCOLIOSIS_COBB_DEG for f in films if not f.scoliosis)


def test_sampled_cobb_angles_respect_the_definition():
    rng = np.random.default_rng(0)
    pos = [sample_cobb(rng, True) for _ in range(300)]
    neg = [sample_cobb(rng, False) for _ in range(300)]
    assert min(pos) >= 10 and max(pos) <= 60 and max(neg) < 10


def test_bad_requests_are_refused():
    with pytest.raises(SpineAIError, match="between 0 and 90"):
        generate_radiograph(-3)
    with pytest.raises(SpineAIError, match="at least 64 pixels"):
        generate_radiograph(10, size=32)


# ---- Cobb angle ---------------------------------------------------------------------------------

def test_cobb_angle_mean_absolute_error_within_clinical_tolerance():
    rng = np.random.default_rng(11)
    errors = []
    for n in range(24):
        truth = 0.0 if n % 4 == 0 else float(rng.uniform(2, 60))
        film = generate_radiograph(truth, seed=500 + n)
        errors.append(measure_cobb(film.image).angle_deg - film.cobb_deg)
    assert np.mean(np.abs(errors)) <= 5.0  # the usual clinical tolerance


def test_cobb_end_vertebrae_are_where_the_curve_tilts_most():
    film = generate_radiograph(40, seed=21)
    m = measure_cobb(film.image)
    assert abs(m.angle_deg - 40) < 8
    upper, lower = (film.vertebra_centres[i, 0] for i in film.end_vertebrae)
    assert abs(m.centre_line[m.upper_end, 0] - upper) < 20 and abs(m.centre_line[m.lower_end, 0] - lower) < 20
    # the centre line runs through the vertebrae
    cols = np.interp(film.vertebra_centres[:, 0], m.centre_line[:, 0], m.centre_line[:, 1])
    inside = (film.vertebra_centres[:, 0] > m.centre_line[0, 0]) & (film.vertebra_centres[:, 0] < m.centre_line[-1, 0])
    assert np.abs(cols - film.vertebra_centres[:, 1])[inside].max() < 6
    lines = m.end_vertebra_lines(15)
    assert len(lines) == 2 and lines[0].shape == (2, 2)
    assert np.linalg.norm(lines[0][1] - lines[0][0]) == pytest.approx(30)


def test_cobb_refuses_what_is_not_a_film():
    with pytest.raises(SpineAIError, match="2D radiograph"):
        measure_cobb(np.zeros((4, 64, 64)))
    with pytest.raises(SpineAIError, match="too small"):
        measure_cobb(np.zeros((32, 32)))
    with pytest.raises(SpineAIError, match="NaN"):
        measure_cobb(np.full((100, 100), np.nan))
    with pytest.raises(SpineAIError, match="no spine|too short"):
        measure_cobb(np.random.default_rng(0).random((128, 128)))


# ---- reading films ------------------------------------------------------------------------------

def _write_dicom(path, pixels: np.ndarray, photometric: str, spacing=(0.3, 0.25), slope=1.0, intercept=0.0):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = list(spacing)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    try:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)  # pydicom 3
    except TypeError:  # pydicom 2 (the newest on Python 3.9)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), ds, write_like_original=False)


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    film = generate_radiograph(25, seed=5, size=128)
    stored = np.round(film.image * 4000).astype(np.uint16)
    _write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2")
    _write_dicom(tmp_path / "m1.dcm", stored.max() + stored.min() - stored, "MONOCHROME1")
    m2 = read_radiograph(tmp_path / "m2.dcm")
    m1 = read_radiograph(tmp_path / "m1.dcm")
    np.testing.assert_allclose(radiograph_plane(m1), radiograph_plane(m2))
    np.testing.assert_allclose(radiograph_plane(m2), stored.astype(np.float32))
    assert m2.spacing == pytest.approx((0.25, 0.3, 1.0))  # (column, row) spacing from ImagerPixelSpacing
    np.testing.assert_array_equal(m2.direction, FRONTAL_DIRECTION)
    spine = film.spine_mask
    assert radiograph_plane(m1)[spine].mean() > radiograph_plane(m1)[~spine].mean() + 500


def test_dicom_rescale_is_applied(tmp_path):
    pixels = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    _write_dicom(tmp_path / "r.dcm", pixels, "MONOCHROME2", slope=2.0, intercept=-100.0)
    np.testing.assert_allclose(radiograph_plane(read_radiograph(tmp_path / "r.dcm")), pixels * 2.0 - 100)


def test_png_and_nifti_films_are_read(tmp_path):
    film = generate_radiograph(15, seed=6, size=96)
    grey = np.round(film.image * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "f.png"))
    rgb = sitk.GetImageFromArray(np.repeat(grey[..., None], 3, -1), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.png"))
    two_d = sitk.GetImageFromArray(film.image)
    two_d.SetSpacing((0.7, 0.6))
    sitk.WriteImage(two_d, str(tmp_path / "f2d.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(film.image[None]), str(tmp_path / "f3d.nii.gz"))
    np.testing.assert_array_equal(radiograph_plane(read_radiograph(tmp_path / "f.png")), grey)
    np.testing.assert_allclose(radiograph_plane(read_radiograph(tmp_path / "rgb.png")), grey, atol=0.51)
    v2 = read_radiograph(tmp_path / "f2d.nii.gz")
    assert v2.spacing == pytest.approx((0.7, 0.6, 1.0))
    np.testing.assert_allclose(radiograph_plane(v2), film.image)
    np.testing.assert_allclose(radiograph_plane(read_radiograph(tmp_path / "f3d.nii.gz")), film.image)


def test_unreadable_films_get_clear_errors(tmp_path):
    with pytest.raises(SpineAIError, match="no such file"):
        read_radiograph(tmp_path / "absent.dcm")
    with pytest.raises(SpineAIError, match="is a folder"):
        read_radiograph(tmp_path)
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(SpineAIError, match="cannot read .* as DICOM"):
        read_radiograph(tmp_path / "junk.dcm")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SpineAIError, match="cannot read .* as a picture"):
        read_radiograph(tmp_path / "junk.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SpineAIError, match="not a DICOM, picture, NIfTI"):
        read_radiograph(tmp_path / "notes.txt")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 40, 40), np.float32) + np.arange(5)[:, None, None]),
                    str(tmp_path / "vol.nii.gz"))
    with pytest.raises(SpineAIError, match="must be a 2D image"):
        read_radiograph(tmp_path / "vol.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((40, 40), 7, np.uint8)), str(tmp_path / "blank.png"))
    with pytest.raises(SpineAIError, match="blank"):
        read_radiograph(tmp_path / "blank.png")
