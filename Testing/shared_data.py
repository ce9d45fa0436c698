"""Where the tests find the shared real data (``SPINEAI_TEST_DATA``, set by .ci/run).

A module of its own, not conftest: two conftest.py files exist under Testing/, and
``from conftest import ...`` would pick whichever pytest imported first.
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
