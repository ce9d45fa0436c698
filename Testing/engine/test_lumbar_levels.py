"""Lumbar disc-level localisation: the endplate geometry, naming, bad inputs, and the shipped locator
on real MR cases it never trained on (spine-mr-bodies validation cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_data import shared_data_path
from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.lumbar.levels import (LUMBAR_DISCS, bodies_from_probabilities, discs_from_bodies, locate_discs,
                                   name_bodies, reference_levels, whole_image_grid)

# A validation case of both the body-click model and the level locator (see their cards).
HELD_OUT_T2 = "VB2_09"  # T2, T11-L5
HELD_OUT_WATER_FAT = "VB3_01"  # water-fat, L1-L5


def _box_bodies() -> Volume:
    """Three 30 x 30 x 20 mm boxes, 10 mm apart along S-I, labelled out of anatomical order."""
    arr = np.zeros((100, 50, 50), np.uint8)
    for label, (k0, k1) in zip((1, 3, 2), ((10, 30), (40, 60), (70, 90))):  # bottom, middle, top
        arr[k0:k1, 10:40, 10:40] = label
    return Volume(arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def test_reference_levels_sort_by_position_and_name_up_from_l5():
    ref = reference_levels(_box_bodies())
    assert [b.name for b in ref.bodies] == ["L3", "L4", "L5"]
    assert [round(b.centre[2], 1) for b in ref.bodies] == [79.5, 49.5, 19.5]
    assert set(ref.discs) == {"L3/L4", "L4/L5", "L5/S1"}  # L1/L2 and L2/L3 have no bodies here
    # Halfway between the endplate surfaces (voxel centres +- half a voxel): L4 ends at 39.5, L5 at 29.5.
    np.testing.assert_allclose(ref.discs["L4/L5"], (24.5, 24.5, 34.5), atol=1e-6)
    np.testing.assert_allclose(ref.discs["L3/L4"], (24.5, 24.5, 64.5), atol=1e-6)
    # L5/S1: the centre of L5's lower endplate.
    np.testing.assert_allclose(ref.discs["L5/S1"], (24.5, 24.5, 9.5), atol=1e-6)


def test_name_bodies_counts_up_from_l5_and_drops_what_lies_below():
    assert name_bodies(7, 6) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert name_bodies(4, 2) == ["L3", "L4", "L5", None]


def test_bodies_from_probabilities_match_the_reference_on_a_2mm_grid():
    """The coarse-to-fine mapping: a perfect 2 mm body / L5 map gives the 1 mm reference discs within 1.5 mm."""
    torch = pytest.importorskip("torch", reason="the probability maps are torch tensors (pip install 'spineai[deep]')")
    from spineai.deep.patches import sample_patch

    labels = _box_bodies()
    grid = whole_image_grid(labels, 2.0)
    lab, _ = sample_patch(labels, grid, mode="nearest")
    prob = torch.zeros((3,) + tuple(lab.shape))
    prob[2] = (lab == 1).float()  # the bottom box is L5
    prob[1] = ((lab == 2) | (lab == 3)).float()
    prob[0] = 1 - prob[1] - prob[2]
    bodies = bodies_from_probabilities(prob, grid)
    assert [b.name for b in bodies] == ["L3", "L4", "L5"]
    found = discs_from_bodies(bodies)
    ref = reference_levels(labels).discs
    for level in ref:
        assert np.linalg.norm(np.asarray(found[level]) - np.asarray(ref[level])) < 1.5, level


def test_the_body_called_l5_sets_the_names_and_a_body_below_it_is_dropped():
    torch = pytest.importorskip("torch", reason="the probability maps are torch tensors (pip install 'spineai[deep]')")
    from spineai.deep.patches import sample_patch

    labels = _box_bodies()
    grid = whole_image_grid(labels, 2.0)
    lab, _ = sample_patch(labels, grid, mode="nearest")
    prob = torch.zeros((3,) + tuple(lab.shape))
    prob[2] = (lab == 3).float()  # the network calls the middle box L5: the bottom one is the sacrum
    prob[1] = ((lab == 1) | (lab == 2)).float()
    prob[0] = 1 - prob[1] - prob[2]
    assert [b.name for b in bodies_from_probabilities(prob, grid)] == ["L4", "L5"]


# ---- bad inputs: clear messages before any model is loaded ----------------------------------------

def test_a_2d_image_is_refused():
    import SimpleITK as sitk

    with pytest.raises(SpineAIError, match="3D image"):
        locate_discs(sitk.Image(64, 64, sitk.sitkFloat32))


def test_an_empty_image_is_refused():
    import SimpleITK as sitk

    with pytest.raises(SpineAIError, match="empty or constant"):
        locate_discs(sitk.Image(40, 60, 80, sitk.sitkFloat32))


def test_nans_are_refused():
    arr = np.random.default_rng(0).random((80, 60, 40)).astype(np.float32)
    arr[5, 6, 7] = np.nan
    with pytest.raises(SpineAIError, match="NaN"):
        locate_discs(Volume(arr))


def test_a_single_slice_is_refused():
    arr = np.random.default_rng(0).random((1, 256, 256)).astype(np.float32)
    with pytest.raises(SpineAIError, match="one slice"):
        locate_discs(Volume(arr, (0.8, 0.8, 4.0)))


def test_something_that_is_not_an_image_is_refused():
    with pytest.raises(SpineAIError, match="SimpleITK image"):
        locate_discs(np.zeros((10, 10, 10)))


# ---- the shipped locator on real MR it never trained on -------------------------------------------

def _case(name):
    import SimpleITK as sitk

    folder = shared_data_path("spine-mr-bodies")
    image = sitk.ReadImage(str(folder / f"{name}_img.nii.gz"))
    labels = Volume.from_sitk(sitk.ReadImage(str(folder / f"{name}_bodies.nii.gz")))
    return image, reference_levels(labels).discs


@pytest.fixture(scope="module")
def water_fat_case():
    pytest.importorskip("monai")
    return _case(HELD_OUT_WATER_FAT)


@pytest.mark.parametrize("name", [HELD_OUT_T2, HELD_OUT_WATER_FAT])
def test_held_out_cases_get_five_correctly_named_discs_near_the_reference(name):
    pytest.importorskip("monai")
    image, ref = _case(name)
    found = locate_discs(image, device="cpu")
    assert list(found) == list(LUMBAR_DISCS)
    for level in LUMBAR_DISCS:
        d = {k: np.linalg.norm(np.asarray(found[level]) - np.asarray(v)) for k, v in ref.items()}
        assert min(d, key=d.get) == level, (level, d)
        assert d[level] < 6.0, (level, d[level])


def test_the_model_card_names_these_cases_as_unseen():
    pytest.importorskip("monai")
    from spineai.deep.bundle import load_torch_bundle

    card = load_torch_bundle("spineai-lumbar-levels", task="lumbar-levels").card
    assert {HELD_OUT_T2, HELD_OUT_WATER_FAT} <= set(card["training"]["validation_cases"])
    assert not {HELD_OUT_T2, HELD_OUT_WATER_FAT} & set(card["training"]["train_cases"])
    body = load_torch_bundle("spineai-body-click").card  # the same split: nothing leaks between the two models
    assert card["training"]["validation_cases"] == body["training"]["validation_cases"]


def test_reoriented_image_gives_the_same_points(water_fat_case):
    import SimpleITK as sitk

    image, _ = water_fat_case
    first = locate_discs(image, device="cpu")
    flipped = sitk.DICOMOrient(image, "RPI")  # other axis order and signs, same physical space
    assert flipped.GetDirection() != image.GetDirection()
    again = locate_discs(flipped, device="cpu")
    for level in first:
        assert np.linalg.norm(np.asarray(first[level]) - np.asarray(again[level])) < 1.0, level


def test_thick_sagittal_slices_give_the_same_points(water_fat_case):
    import SimpleITK as sitk

    image, ref = water_fat_case
    first = locate_discs(image, device="cpu")
    # 4 mm sagittal slices (L-R) with 0.8 mm in-plane pixels, as a clinical sagittal series.
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), (4.0, 0.8, 0.8))]
    smooth = sitk.SmoothingRecursiveGaussian(image, (1.7, 0.01, 0.01))
    thick = sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (4.0, 0.8, 0.8),
                          image.GetDirection(), 0.0, sitk.sitkFloat32)
    again = locate_discs(thick, device="cpu")
    assert list(again) == list(LUMBAR_DISCS)
    for level in first:
        assert np.linalg.norm(np.asarray(first[level]) - np.asarray(again[level])) < 4.0, level


def test_command_line_writes_the_discs_as_json(tmp_path):
    pytest.importorskip("monai")
    from spineai.cli import main

    folder = shared_data_path("spine-mr-bodies")
    out = tmp_path / "levels.json"
    assert main(["lumbar-levels", str(folder / f"{HELD_OUT_WATER_FAT}_img.nii.gz"), "--device", "cpu",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["discs_lps"]) == list(LUMBAR_DISCS)
    for level, p in data["discs_lps"].items():
        assert data["discs_ras"][level] == [round(-p[0], 2), round(-p[1], 2), round(p[2], 2)]
    assert list(data["bodies_lps"])[-1] == "L5"
    assert main(["lumbar-levels", str(folder / f"{HELD_OUT_WATER_FAT}_img.nii.gz"), "--out", str(out)]) == 2  # no overwrite


def test_training_examples_label_the_lowest_body_l5():
    pytest.importorskip("monai")
    from spineai.lumbar.levels_training import PATCH_SHAPE, load_level_case, make_example

    case = load_level_case(shared_data_path("spine-mr-bodies"), "VB2_05")
    assert [b.name for b in case.reference.bodies][-1] == "L5"
    x, y = make_example(case, np.random.default_rng(0), augment=False)
    assert x.shape == (1,) + PATCH_SHAPE and y.shape == (1,) + PATCH_SHAPE
    z = np.argwhere(y[0].numpy() > 0)[:, 0]  # patch z index: 0 is inferior
    l5 = np.argwhere(y[0].numpy() == 2)[:, 0]
    assert l5.size > 1000 and l5.mean() < np.percentile(z, 25)  # L5 is the lowest body
    x2, _ = make_example(case, np.random.default_rng(1), augment=True)
    assert x2.shape == x.shape and np.isfinite(x2.numpy()).all()
