"""Shared test fixtures.

Real public data (IBSI phantom, spine samples, the SD/MET table) lives outside the project;
``SPINEAI_TEST_DATA`` points at it (``.ci/run`` sets it to ``../shared/data``). Tests that need it
skip with the reason when it is absent, as in a user's clone.
"""

from __future__ import annotations

import pytest

from shared_data import DATA_VARIABLE, shared_data_path  # noqa: E402,F401


@pytest.fixture
def shared_data():
    """``shared_data('spine-samples', 'x.nii.gz')`` -> Path, or skip when the data is absent."""
    return shared_data_path


@pytest.fixture(scope="session")
def phantom():
    """A small deterministic spine phantom with a metastasis-like lesion in L3."""
    from spineai.phantom import make_spine_phantom

    return make_spine_phantom(seed=7, lesion_kind="MET")
