"""The extension builds and installs with CMake as on the Slicer factory: the real
slicerMacroBuildScriptedModule and CTK's ctkMacroCompilePythonScript (harness folder), behind the
stub SlicerConfig.cmake of Testing/cmake. The installed tree is what Slicer puts on its paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import slicer_harness

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SpineAI", "SpineAIRadiomics", "SpineAILumbar")
SCRIPTED = "lib/Slicer-5.10/qt-scripted-modules"


def _cmake() -> str:
    # On PATH, or installed into this interpreter's environment (`pip install cmake`, see .ci/run).
    found = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("cmake is not installed (pip install cmake)")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    cmake = _cmake()
    harness = slicer_harness.harness_folder()
    if harness is None:
        pytest.skip(slicer_harness.missing_reason())
    work = tmp_path_factory.mktemp("cmake")
    build, prefix = work / "build", work / "install"

    def run(*args):
        done = subprocess.run([cmake, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    configured = run("-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={ROOT / 'Testing' / 'cmake'}",
                     f"-DSLICER_HARNESS_DIR={harness}", f"-DPYTHON_EXECUTABLE={sys.executable}")
    run("--build", str(build))
    run("--install", str(build), "--prefix", str(prefix))
    return configured, build, prefix / SCRIPTED


def _files(folder: Path, pattern: str = "*") -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_each_module_is_configured_with_slicers_macro(installed):
    configured, build, _ = installed
    for module in MODULES:
        assert f"Configuring Scripted module: {module}" in configured  # slicerMacroBuildScriptedModule's message
    tests = (build / "python_unittests.txt").read_text().split()
    for module in MODULES:  # the self-test and Slicer's generic module test are registered
        assert f"{module}.py" in tests and f"nomainwindow_qSlicer{module}ModuleGenericTest.py" in tests


def test_modules_lib_packages_and_resources_are_installed(installed):
    _, _, scripted = installed
    for module in MODULES:
        folder = ROOT / module
        expected = {*_files(folder, "*.py"), *(f"Resources/{f}" for f in _files(folder / "Resources"))}
        missing = expected - _files(scripted)
        assert not missing, f"{module}: not installed: {sorted(missing)}"
        assert (scripted / f"{module}.pyc").is_file()  # byte-compiled by CTK's step
    for name in ("SpineAICommon/jobs.py", "SpineAICommon/worker.py", "SpineAIRadiomicsLib/compute.py",
                 "Resources/UI/SpineAIRadiomics.ui", "Resources/Icons/SpineAIPhantom.png"):
        assert (scripted / name).is_file(), name


def test_the_engine_is_installed_whole_beside_the_modules(installed):
    _, _, scripted = installed
    source = ROOT / "src"
    engine = {f for f in _files(source / "spineai")}
    assert engine and {f for f in _files(scripted / "spineai")} == engine  # every .py and resource, nothing else
    assert (scripted / "spineai" / "resources" / "models" / "registry.json").is_file()
    for name in sorted(engine):
        assert (scripted / "spineai" / name).read_bytes() == (source / "spineai" / name).read_bytes(), name


def test_the_installed_tree_imports_as_slicer_would(installed):
    _, _, scripted = installed
    # Slicer puts qt-scripted-modules on sys.path: the engine and the helpers come from there alone.
    code = (f"import sys; sys.path.insert(0, {str(scripted)!r}); "
            "import spineai, SpineAICommon.jobs, SpineAIRadiomicsLib.compute; "
            "from spineai.models import registry; "
            "print(spineai.__file__); print(len(registry.list_models()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(scripted.parent), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    path, count = done.stdout.split()
    assert Path(path).resolve().is_relative_to(scripted.resolve()) and int(count) >= 1
