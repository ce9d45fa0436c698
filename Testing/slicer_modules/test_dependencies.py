"""First-use dependency installation: ask once, install with progress, torch and PyRadiomics only
from their extensions, a package per platform that has wheels there, a dialog for every failure."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from spineai.errors import SpineAIError

from SpineAICommon.dependencies import (DependencyError, DependencyInstaller, choose_device, missing, platform_key,
                                        requirements)


class FakeEnvironment:
    def __init__(self, installed):
        self.installed = set(installed)
        self.pip_calls, self.questions, self.progress = [], [], []

    def finder(self, name):
        return object() if name in self.installed else None

    def pip(self, requirement):
        self.pip_calls.append(requirement)
        self.installed.add({"scikit-learn>=1.4": "sklearn", "xgboost-cpu>=2.1": "xgboost", "xgboost>=2.1": "xgboost",
                            "safetensors>=0.4": "safetensors", "scipy>=1.11": "scipy", "monai>=1.4 --no-deps": "monai",
                            "einops>=0.7": "einops"}.get(requirement, requirement))


def test_nothing_missing_asks_nothing():
    env = FakeEnvironment({"SimpleITK", "radiomics"})  # PyRadiomics there: the SlicerRadiomics extension is installed
    DependencyInstaller(lambda *a: pytest.fail("asked"), env.pip, finder=env.finder).ensure("radiomics")
    assert env.pip_calls == []


def test_missing_lists_each_package_once():
    env = FakeEnvironment({"SimpleITK"})
    names = [r.module for r in missing(["segment", "radiomics"], env.finder)]
    assert names == ["scipy", "radiomics"]
    with pytest.raises(SpineAIError, match="unknown task 'nope'"):
        missing(["nope"])


def test_confirm_once_then_install_with_progress():
    env = FakeEnvironment({"SimpleITK", "radiomics"})
    asked = []
    installer = DependencyInstaller(lambda text, details: asked.append(details) or True, env.pip,
                                    progress=lambda *a: env.progress.append(a), finder=env.finder, platform="win32")
    installer.ensure("segment", "classify")
    assert len(asked) == 1 and "scipy>=1.11" in asked[0] and "xgboost-cpu>=2.1" in asked[0]
    assert env.pip_calls == ["scipy>=1.11", "scikit-learn>=1.4", "xgboost-cpu>=2.1", "safetensors>=0.4"]
    assert env.progress[-1] == (4, 4, "packages installed")


def test_declined_is_remembered():
    env = FakeEnvironment({"SimpleITK"})
    asked = []
    installer = DependencyInstaller(lambda *a: asked.append(1) or False, env.pip, finder=env.finder)
    for _ in range(2):
        with pytest.raises(SpineAIError, match="installation was declined"):
            installer.ensure("segment")
    assert len(asked) == 1 and env.pip_calls == []


@pytest.mark.parametrize("platform, xgboost", [("linux", "xgboost-cpu>=2.1"), ("win32", "xgboost-cpu>=2.1"),
                                               ("darwin", "xgboost>=2.1"), ("cygwin", "xgboost-cpu>=2.1")])
def test_requirements_per_platform(platform, xgboost):
    table = requirements(platform)
    pips = {r.module: r.pip for reqs in table.values() for r in reqs}
    assert pips["xgboost"] == xgboost
    # Nothing that lacks wheels is pip-installed: PyRadiomics and torch come from extensions.
    assert pips["radiomics"] is None and pips["torch"] is None
    extensions = {r.module: r.extension for reqs in table.values() for r in reqs if r.extension}
    assert extensions == {"radiomics": "SlicerRadiomics", "torch": "PyTorch"}
    assert not any("pyradiomics" in (p or "") for p in pips.values())
    assert platform_key("win32") == "win32" and platform_key("linux") == "linux" and platform_key("darwin") == "darwin"


def test_missing_pyradiomics_asks_for_the_slicerradiomics_extension():
    env = FakeEnvironment({"SimpleITK"})
    dialogs = []
    installer = DependencyInstaller(lambda *a: pytest.fail("asked to pip-install what no pip can provide"), env.pip,
                                    finder=env.finder, report=lambda text, details: dialogs.append(text))
    with pytest.raises(DependencyError, match="the SlicerRadiomics extension provides: install the 'SlicerRadiomics' "
                                              "extension from the Extensions Manager"):
        installer.ensure("radiomics")
    assert len(dialogs) == 1 and "SlicerRadiomics" in dialogs[0] and env.pip_calls == []


def test_a_failed_pip_install_ends_in_a_dialog_saying_what_to_do():
    env = FakeEnvironment({"SimpleITK", "scipy"})
    dialogs = []

    def pip(requirement):
        if requirement.startswith("xgboost"):
            raise subprocess.CalledProcessError(1, ["pip", "install", requirement], output="No matching distribution found")
        env.pip(requirement)

    installer = DependencyInstaller(lambda *a: True, pip, finder=env.finder, platform="darwin",
                                    report=lambda text, details: dialogs.append((text, details)))
    with pytest.raises(DependencyError, match=r"^Installing xgboost>=2\.1 failed \(CalledProcessError: .*\)\. "
                                              r"Installed before it: scikit-learn>=1\.4\. What to do: check the network"):
        installer.ensure("classify")
    (text, details), = dialogs
    assert "slicer.util.pip_install('path/to/file.whl')" in text and details == "No matching distribution found"
    assert env.pip_calls == ["scikit-learn>=1.4"]

    def broken(requirement):
        raise OSError("pip not found")

    with pytest.raises(DependencyError, match=r"Installing xgboost-cpu>=2\.1 failed \(OSError: pip not found\)\. Installed before it: nothing"):
        DependencyInstaller(lambda *a: True, broken, finder=env.finder, report=lambda *a: dialogs.append(a)).ensure("classify")
    assert len(dialogs) == 2


def test_still_missing_after_install_ends_in_a_dialog():
    env = FakeEnvironment({"SimpleITK"})
    dialogs = []
    installer = DependencyInstaller(lambda *a: True, lambda r: None, finder=env.finder,
                                    report=lambda text, details: dialogs.append(details))
    with pytest.raises(DependencyError, match="still cannot be imported. What to do: restart Slicer"):
        installer.ensure("segment")
    assert dialogs == ["- scipy>=1.11: connected components and morphology"]


def test_torch_only_through_the_pytorch_extension():
    env = FakeEnvironment(set())
    installer = DependencyInstaller(lambda *a: True, env.pip, install_torch=lambda: None, finder=env.finder)
    with pytest.raises(DependencyError, match="install the 'PyTorch' extension"):
        installer.ensure("deep")
    assert env.pip_calls == []  # never pip torch

    def install_torch():
        env.installed.add("torch")
        return types.SimpleNamespace(__version__="2.5")

    DependencyInstaller(lambda *a: True, env.pip, install_torch=install_torch, finder=env.finder).ensure("deep")
    assert "torch" in env.installed
    # MONAI and the rest by pip, after torch and without dependencies: never a torch from PyPI
    assert env.pip_calls == ["monai>=1.4 --no-deps", "einops>=0.7", "safetensors>=0.4"]


def test_device_choice_honours_forced_cpu():
    gpu = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    none = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    broken = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: 1 / 0))
    assert choose_device(False, gpu) == "cuda"
    assert choose_device(True, gpu) == "cpu"
    assert choose_device(False, none) == "cpu"
    assert choose_device(False, broken) == "cpu"


def test_the_wheel_check_covers_what_each_platform_installs(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "check_wheels.py"
    spec = importlib.util.spec_from_file_location("check_wheels", path)
    check_wheels = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_wheels", check_wheels)  # dataclasses look their module up
    spec.loader.exec_module(check_wheels)
    todo = check_wheels.checks()
    assert {(c.platform, c.python) for c in todo} == {
        (p, v) for p in ("win_amd64", "macosx_arm64", "macosx_x86_64", "manylinux_x86_64") for v in ("3.9", "3.12")}
    installed = {(c.platform, c.requirement) for c in todo if c.installed_by_spineai}
    for platform, (sys_platform, _) in check_wheels.PLATFORMS.items():
        expected = {r.pip for reqs in requirements(sys_platform).values() for r in reqs
                    if r.pip and r.module not in ("SimpleITK", "scipy")}
        assert {r for p, r in installed if p == platform} == expected
    assert ("macosx_arm64", "xgboost>=2.1") in installed and ("win_amd64", "xgboost-cpu>=2.1") in installed
    record = {(c.platform, c.requirement) for c in todo if not c.installed_by_spineai}
    assert ("macosx_x86_64", "xgboost-cpu>=2.1") in record and ("manylinux_x86_64", "pyradiomics-bhklab>=3.1.4") in record
