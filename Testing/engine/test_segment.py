"""Seeded segmentation on synthetic phantoms, and every bad input's message."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.phantom import LABELS, make_spine_phantom
from spineai.segment import SEGMENTATION_MODES, segment


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def met():
    return make_spine_phantom(seed=1, lesion_kind="MET")


def test_modes_are_exported():
    assert SEGMENTATION_MODES == ("lesion", "vertebral-body")


# Measured Dice (8 phantom seeds 0-7): SD 0.932-0.980, MET 0.964-0.987, STB 0.910-0.950. Seeds 0,
# 5 and 7 are the hardest (seed 0: lesion contrast ~3.6 noise sigmas; seed 5 / 7: bright loculi and
# oedema at the margin, and an STB rim half-way to marrow).
@pytest.mark.parametrize("kind", ["SD", "MET", "STB"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5, 7])
def test_lesion_dice_on_phantom(kind, seed):
    ph = make_spine_phantom(seed=seed, lesion_kind=kind)
    mask = segment(ph.image, ph.lesion_center_ijk, mode="lesion")
    assert mask.same_geometry(ph.image)
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    assert dice(mask.array, ph.lesion_mask.array) >= 0.90


# On 4 mm slices a small lesion's start region is one or two slices thick: its front starts half
# a voxel outside it (classic._level_set), and a lesion smaller than its statistics ball gets its
# window re-set against the tissue around its region (classic._refit_to_surroundings). Measured:
# 6 mm MET 0.90 / 0.95 (seeds 0 / 1; refused before the shifted start), SD seed 1 0.93, STB seed 0
# 0.81; 1 cm MET seed 0 0.96, SD seed 1 0.97, STB seed 0 0.88 (without the refit: 0.92, 1.00,
# 0.64, 0.44; 0.91, 0.80, 0.67).
# 6 mm MET seed 3 (24 voxels, on one or two slices) is the regrown front on 4 mm slices: 0.92
# (before: 0.01, its ball and front the marrow's).
@pytest.mark.parametrize("kind,size_mm,seed,target", [("MET", 6.0, 0, 0.70), ("MET", 6.0, 1, 0.70),
                                                      ("SD", 6.0, 1, 0.70), ("STB", 6.0, 0, 0.70),
                                                      ("MET", 6.0, 3, 0.70),
                                                      ("MET", 10.0, 0, 0.80), ("SD", 10.0, 1, 0.80),
                                                      ("STB", 10.0, 0, 0.80)])
def test_small_lesion_on_4mm_slices(kind, size_mm, seed, target):
    ph = make_spine_phantom(seed=seed, lesion_kind=kind, lesion_radius_mm=size_mm / 2, shape_ijk=(200, 267, 18),
                            spacing=(0.9, 0.9, 4.0))
    mask = segment(ph.image, ph.lesion_center_ijk, mode="lesion")
    assert dice(mask.array, ph.lesion_mask.array) >= target


# Small lesions on 1 mm slices (0.9 mm in-plane). The statistics ball grows from the seed while
# uniform; for 6 mm lesions the 2 mm ball straddles the margin and the first front runs into the
# marrow, and the refit against the region's surroundings takes the ball's median for the lesion.
# Measured: 1 cm MET seed 0 0.96, SD seed 1 0.95 (before the growing ball: refused, "grows nothing
# plausible"); 6 mm SD 0.90 / 0.91, MET 0.95 / 0.93 (seeds 0 / 1; before the refit 0.51 / 0.09,
# 0.87 / 0.15). 6 mm STB's ball grows through its dark rim into the marrow, and so does its front:
# grown again from the click's 2 mm ball (classic._regrow_from_the_click) it scores 0.80 / 0.92
# (before: 0.01 / 0.01).
@pytest.mark.parametrize("kind,size_mm,seed,target", [("MET", 10.0, 0, 0.80), ("SD", 10.0, 1, 0.80),
                                                      ("SD", 6.0, 1, 0.70), ("MET", 6.0, 1, 0.70),
                                                      ("STB", 6.0, 0, 0.70), ("STB", 6.0, 1, 0.70)])
def test_small_lesion_on_1mm_slices(kind, size_mm, seed, target):
    ph = make_spine_phantom(seed=seed, lesion_kind=kind, lesion_radius_mm=size_mm / 2, shape_ijk=(200, 267, 72),
                            spacing=(0.9, 0.9, 1.0))
    mask = segment(ph.image, ph.lesion_center_ijk, mode="lesion")
    assert dice(mask.array, ph.lesion_mask.array) >= target


def test_lesion_level_set_stops_when_settled(met, monkeypatch):
    """The stop (off by default: it saves nothing overall) runs half the cap, probes a sixteenth,
    and returns what running to the cap gives."""
    import SimpleITK as sitk

    import spineai.segment.classic as classic
    from dataclasses import replace

    counted = []
    execute = sitk.ThresholdSegmentationLevelSetImageFilter.Execute

    def counting(self, *args):
        out = execute(self, *args)
        counted.append(self.GetElapsedIterations())
        return out

    monkeypatch.setattr(sitk.ThresholdSegmentationLevelSetImageFilter, "Execute", counting)
    capped = segment(met.image, met.lesion_center_ijk).array
    assert counted == [450]  # 10 x 35 mm / 1 mm + 100
    counted.clear()
    monkeypatch.setitem(classic._MODES, "lesion", replace(classic._MODES["lesion"], settle_share=0.5))
    stopped = segment(met.image, met.lesion_center_ijk).array
    # Settled after half (ITK's filter is multithreaded, and this probe's growth lies near the
    # threshold: some runs go on to the cap).
    assert counted in ([225, 28], [225, 28, 450])
    assert dice(stopped, capped) >= 0.995


def test_lesion_stays_inside_its_vertebra_with_within(met):
    level = LABELS[met.lesion_level]
    mask = segment(met.image, met.lesion_center_ijk, within=met.labels)  # label found under the seed
    body = met.labels.array == level
    assert mask.array.any() and not (mask.array.astype(bool) & ~body).any()
    explicit = segment(met.image, met.lesion_center_ijk, within=met.labels, within_label=level)
    assert np.array_equal(mask.array, explicit.array)


def test_vertebral_body_mode_on_phantom(met):
    # A body away from the lesion: seed at the deepest voxel of L1.
    from scipy import ndimage

    body = met.labels.array == LABELS["L1"]
    k, j, i = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(body))), body.shape)
    mask = segment(met.image, (int(i), int(j), int(k)), mode="vertebral-body")
    assert mask.same_geometry(met.image)
    m = mask.array.astype(bool)
    assert dice(m, body) >= 0.85
    assert (m & body).sum() / m.sum() >= 0.95  # no spill into discs or neighbours


def test_partial_volume_rim_outside_a_thin_cortex_is_peeled():
    # A 3 mm "body" (marrow 160) inside a one-voxel dark cortex (20), then a one-voxel shell that
    # averages cortex and fat to a marrow-like 160, then fat (400): the level set takes that shell
    # in through a gap in the cortex; the peel must drop it and keep every body voxel.
    from spineai.segment.classic import _peel_partial_volume

    rng = np.random.default_rng(0)
    k, j, i = np.indices((24, 24, 24))
    r = np.sqrt((k - 12.0) ** 2 + (j - 12.0) ** 2 + (i - 12.0) ** 2)
    body, cortex, mixed = r < 6, (r >= 6) & (r < 7), (r >= 7) & (r < 8)
    gap = cortex & (i > 12) & (np.abs(j - 12) <= 1) & (np.abs(k - 12) <= 1)
    image = np.full(r.shape, 400.0)
    image[body | mixed | gap] = 160.0
    image[cortex & ~gap] = 20.0
    image += rng.normal(0.0, 8.0, image.shape)
    region = body | mixed | gap
    kept = _peel_partial_volume(region, image.astype(np.float32), (3.0, 3.0, 3.0), (12, 12, 12),
                                centre=160.0, lower=90.0, upper=280.0, layers=2)
    assert kept[body].all()
    assert kept[mixed].mean() < 0.1


def test_numpy_integer_seed_and_float_image(met):
    img = met.image.with_array(met.image.array.astype(np.float64))
    seed = tuple(np.int64(v) for v in met.lesion_center_ijk)
    a = segment(img, seed)
    b = segment(met.image, met.lesion_center_ijk)
    assert dice(a.array, b.array) > 0.99


# ---- bad input -------------------------------------------------------------------------------

def test_seed_outside_image(met):
    i, j, k = met.image.size_ijk
    with pytest.raises(SpineAIError, match=r"seed at voxel index \[.*\] lies outside the image"):
        segment(met.image, (i, 5, 5))
    with pytest.raises(SpineAIError, match="lies outside the image"):
        segment(met.image, (-1, 5, 5))


def test_seed_not_three_integers(met):
    with pytest.raises(SpineAIError, match="three integer voxel indices"):
        segment(met.image, (1.5, 2, 3))
    with pytest.raises(SpineAIError, match="three integer voxel indices"):
        segment(met.image, (1, 2))


def test_seed_on_background_grows_nothing():
    # A bright single-voxel speck on a smooth dark background: nothing plausible grows there.
    rng = np.random.default_rng(0)
    arr = (100 + rng.normal(0, 1, (20, 40, 40))).astype(np.float32)
    arr[10, 20, 20] = 5000
    # The speck itself is atypical, so its neighbourhood starts the growth, which finds no boundary.
    with pytest.raises(SpineAIError, match=r"seed at voxel index \[20, 20, 10\] fills the whole search region"):
        segment(Volume(arr, (1.0, 1.0, 1.0)), (20, 20, 10))


def test_seed_on_flat_background():
    # Uniform padding / air: there is nothing to grow from.
    arr = np.zeros((60, 120, 120), np.int16)
    with pytest.raises(SpineAIError, match=r"image is flat around the seed at voxel index \[60, 60, 30\]"):
        segment(Volume(arr, (1.0, 1.0, 1.0)), (60, 60, 30))


def test_nan_voxels(met):
    arr = met.image.array.astype(np.float32)
    arr[3, 4, 5] = np.nan
    with pytest.raises(SpineAIError, match=r"1 NaN or infinite voxel\(s\), the first at voxel \(i, j, k\) = \(5, 4, 3\)"):
        segment(met.image.with_array(arr), met.lesion_center_ijk)


def test_within_of_another_geometry(met):
    other = Volume(met.labels.array, met.labels.spacing, (0.0, 0.0, 0.0), met.labels.direction)
    with pytest.raises(SpineAIError, match="within label map does not have the image's geometry"):
        segment(met.image, met.lesion_center_ijk, within=other)


def test_within_label_absent(met):
    with pytest.raises(SpineAIError, match=r"label 99 is absent from the within label map; labels present: 1, 2"):
        segment(met.image, met.lesion_center_ijk, within=met.labels, within_label=99)


def test_within_seed_on_label_zero(met):
    zero = np.argwhere(met.labels.array == 0)[0]
    seed = (int(zero[2]), int(zero[1]), int(zero[0]))
    with pytest.raises(SpineAIError, match=r"lies on background \(label 0\) of the within label map"):
        segment(met.image, seed, within=met.labels)


def test_within_label_without_map(met):
    with pytest.raises(SpineAIError, match="within_label was given without a within label map"):
        segment(met.image, met.lesion_center_ijk, within_label=3)


def test_unknown_mode(met):
    with pytest.raises(SpineAIError, match="unknown segmentation mode 'body': choose one of lesion, vertebral-body"):
        segment(met.image, met.lesion_center_ijk, mode="body")
