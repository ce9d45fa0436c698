"""The synthetic spine phantom: deterministic, anatomically ordered, lesion where it says."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.phantom import LABELS, LEVELS, make_spine_phantom


def test_deterministic_by_seed(phantom):
    again = make_spine_phantom(seed=7, lesion_kind="MET")
    np.testing.assert_array_equal(again.image.array, phantom.image.array)
    other = make_spine_phantom(seed=8, lesion_kind="MET")
    assert not np.array_equal(other.image.array, phantom.image.array)


def test_geometry_is_oblique_and_shared(phantom):
    for vol in (phantom.labels, phantom.lesion_mask):
        assert vol.same_geometry(phantom.image)
    assert np.linalg.det(phantom.image.direction) == pytest.approx(1.0)
    assert not np.allclose(phantom.image.direction, np.eye(3))
    assert np.linalg.norm(phantom.image.origin) > 0


def test_anatomy_is_ordered_superior_to_inferior(phantom):
    labels = phantom.labels.array
    centres = []
    for level in LEVELS:
        kji = np.argwhere(labels == LABELS[level])
        assert len(kji) > 1000, level
        centres.append(phantom.labels.ijk_to_ras(kji.mean(axis=0)[::-1]))
    # RAS S decreases from L1 to L5.
    assert all(a[2] > b[2] for a, b in zip(centres, centres[1:]))
    assert (labels == LABELS["canal"]).any() and (labels == LABELS["L3/L4"]).any()


@pytest.mark.parametrize("kind", ["SD", "MET", "STB"])
def test_lesion_inside_its_body_with_centre_inside(kind):
    ph = make_spine_phantom(seed=3, lesion_kind=kind, lesion_level="L2")
    lesion = ph.lesion_mask.array.astype(bool)
    assert lesion.sum() > 500
    assert np.all(ph.labels.array[lesion] == LABELS["L2"])
    i, j, k = ph.lesion_center_ijk
    assert lesion[k, j, i]
    # The lesion is brighter than the marrow around it on this T2-like image.
    body = (ph.labels.array == LABELS["L2"]) & ~lesion
    assert ph.image.array[lesion].mean() > ph.image.array[body].mean() * 1.3


def test_no_lesion_and_bad_arguments():
    ph = make_spine_phantom(seed=1, lesion_kind=None)
    assert ph.lesion_mask.array.sum() == 0 and ph.lesion_center_ijk is None
    with pytest.raises(SpineAIError, match="lesion kind must be one of"):
        make_spine_phantom(lesion_kind="GBM")
    with pytest.raises(SpineAIError, match="field of view .* too small"):
        make_spine_phantom(shape_ijk=(50, 50, 10))
