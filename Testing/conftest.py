"""Shared test fixtures.

Real public data (IBSI phantom, spine samples, the SD/MET table) lives outside the project;
``SPINEAI_TEST_DATA`` points at it (``.ci/run`` sets it to ``../shared/data``). Tests that need it
skip with the reason when it is absent, as in a user's clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_VARIABLE = "SPINEAI_TEST_DATA"


def shared_data_path(*parts: str) -> Path:
    root = os.environ.get(DATA_VARIABLE)
    if not root:
        pytest.skip(f"{DATA_VARIABLE} is not set: it points at the shared real-data folder (../shared/data)")
    path = Path(root, *parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: {DATA_VARIABLE}={root} has no {'/'.join(parts)}")
    return path


@pytest.fixture
def shared_data():
    """``shared_data('spine-samples', 'x.nii.gz')`` -> Path, or skip when the data is absent."""
    return shared_data_path


@pytest.fixture(scope="session")
def phantom():
    """A small deterministic spine phantom with a metastasis-like lesion in L3."""
    from spineai.phantom import make_spine_phantom

    return make_spine_phantom(seed=7, lesion_kind="MET")
