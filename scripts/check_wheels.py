"""Does every package SpineAI pip-installs inside Slicer have a wheel for each platform and Python?

For each platform Slicer ships on (Windows x86_64, macOS arm64 and x86_64, Linux x86_64) and each
Python a supported Slicer runs (3.9: Slicer 5.6/5.8; 3.12: Slicer 5.10), runs
``pip download --only-binary=:all: --no-deps`` against PyPI for the requirements that
``SpineAICommon.dependencies`` installs on that platform. Packages Slicer itself ships (numpy,
scipy, SimpleITK) and those that come from other extensions (PyRadiomics: SlicerRadiomics; torch:
PyTorch) are not pip-installed; the packages they replace are checked too, for the record
(``expected: no wheel``), so the reason for the choice stays visible.

    python scripts/check_wheels.py            # needs https://pypi.org; prints a Markdown table
    python scripts/check_wheels.py --list     # what would be checked, offline

Exit status 1 when a requirement SpineAI installs has no wheel somewhere.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "SpineAI")]

from SpineAICommon.dependencies import requirements  # noqa: E402

# pip --platform tags. Slicer 5.6 to 5.10 run on Windows 10+, macOS 12+ and Linux with glibc 2.28+
# (AlmaLinux 8). pip itself adds older macOS tags, but not older manylinux ones: those are listed.
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
PLATFORMS = {
    "win_amd64": ("win32", ["win_amd64"]),
    "macosx_arm64": ("darwin", ["macosx_12_0_arm64"]),
    "macosx_x86_64": ("darwin", ["macosx_12_0_x86_64"]),
    "manylinux_x86_64": ("linux", MANYLINUX),
}
PYTHONS = ("3.9", "3.12")
SHIPPED_WITH_SLICER = {"numpy", "scipy", "SimpleITK"}
# Not installed by SpineAI, checked to document why (see SpineAICommon/dependencies.py).
FOR_THE_RECORD = {"pyradiomics-bhklab>=3.1.4": "PyPI has a source package only: PyRadiomics comes from SlicerRadiomics",
                  "xgboost-cpu>=2.1": "no macOS wheel: macOS gets xgboost"}


@dataclass(frozen=True)
class Check:
    platform: str  # a key of PLATFORMS
    python: str
    requirement: str
    installed_by_spineai: bool  # False: checked only for the record


def checks() -> list[Check]:
    out = []
    for name, (sys_platform, _) in PLATFORMS.items():
        pips = []
        for reqs in requirements(sys_platform).values():
            for req in reqs:
                if req.pip and req.module not in SHIPPED_WITH_SLICER and req.pip not in pips:
                    pips.append(req.pip)
        extra = [r for r in FOR_THE_RECORD if r not in pips]
        for python in PYTHONS:
            out += [Check(name, python, r, True) for r in pips]
            out += [Check(name, python, r, False) for r in extra]
    return out


def download(check: Check, folder: str) -> tuple[bool, str]:
    """Whether a wheel for ``check`` exists on PyPI, and pip's last line (file or error)."""
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps", "--quiet",
               "--index-url", "https://pypi.org/simple", "--python-version", check.python,
               "--implementation", "cp", "--dest", folder]
    for tag in PLATFORMS[check.platform][1]:
        command += ["--platform", tag]
    # Only PyPI: no local mirror or find-links from pip configuration files.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    done = subprocess.run(command + [check.requirement], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode == 0:
        files = sorted(p.name for p in Path(folder).iterdir())
        name = check.requirement.split(">")[0].split("=")[0].replace("-", "_").lower()
        wheel = next((f for f in files if f.lower().startswith(name)), "?")
        return True, wheel
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return False, lines[-1].removeprefix("ERROR: ") if lines else f"exit code {done.returncode}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print what would be checked and stop")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), action="append", help="only these platforms")
    args = parser.parse_args(argv)
    todo = [c for c in checks() if not args.platform or c.platform in args.platform]
    if args.list:
        for c in todo:
            print(c.platform, c.python, c.requirement, "" if c.installed_by_spineai else "(for the record)")
        return 0
    print("| platform | Python | requirement | wheel on PyPI |")
    print("| --- | --- | --- | --- |")
    failures = 0
    for c in todo:
        with tempfile.TemporaryDirectory() as folder:
            ok, detail = download(c, folder)
        if c.installed_by_spineai:
            failures += not ok
            verdict = f"yes: `{detail}`" if ok else f"**NO**: {detail}"
        else:
            verdict = (f"none, as expected ({FOR_THE_RECORD[c.requirement]})" if not ok
                       else f"yes: `{detail}` (not installed by SpineAI)")
        print(f"| {c.platform} | {c.python} | `{c.requirement}` | {verdict} |", flush=True)
    print(f"\n{failures} requirement(s) SpineAI installs lack a wheel.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
