"""The checkout must survive a case-insensitive file system (Windows, default macOS).

`SpineAI/` (Slicer module) beside `spineai/` (engine) was one folder there: the engine moved to
`src/spineai/`, and this test keeps any two tracked paths from differing only in case again.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def case_collisions(paths):
    """Groups of paths (files or any parent folder) that are equal ignoring case but not equal."""
    seen = defaultdict(set)
    for path in paths:
        parts = Path(path).parts
        for n in range(1, len(parts) + 1):
            prefix = "/".join(parts[:n])
            seen[prefix.lower()].add(prefix)
    return sorted(sorted(group) for group in seen.values() if len(group) > 1)


def test_case_collisions_are_detected():
    assert case_collisions(["SpineAI/SpineAI.py", "spineai/cli.py"]) == [["SpineAI", "spineai"]]
    assert case_collisions(["src/spineai/cli.py", "SpineAI/SpineAI.py"]) == []


def test_no_tracked_paths_differ_only_in_case():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error})")
    assert case_collisions(out.splitlines()) == []


def test_engine_lives_under_src():
    assert (ROOT / "src" / "spineai" / "__init__.py").is_file()
    # listdir, not exists(): on a case-insensitive disk "spineai" would find SpineAI/.
    assert "spineai" not in __import__("os").listdir(ROOT)
