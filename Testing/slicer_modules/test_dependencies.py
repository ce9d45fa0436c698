"""First-use dependency installation: ask once, install with progress, torch only via PyTorchUtils."""

from __future__ import annotations

import types

import pytest

from spineai.errors import SpineAIError

from SpineAICommon.dependencies import DependencyInstaller, choose_device, missing


class FakeEnvironment:
    def __init__(self, installed):
        self.installed = set(installed)
        self.pip_calls, self.questions, self.progress = [], [], []

    def finder(self, name):
        return object() if name in self.installed else None

    def pip(self, requirement):
        self.pip_calls.append(requirement)
        self.installed.add({"pyradiomics-bhklab>=3.1.4": "radiomics", "scikit-learn>=1.4": "sklearn",
                            "xgboost-cpu>=2.1": "xgboost", "safetensors>=0.4": "safetensors"}.get(requirement, requirement))


def test_nothing_missing_asks_nothing():
    env = FakeEnvironment({"SimpleITK", "radiomics"})
    DependencyInstaller(lambda *a: pytest.fail("asked"), env.pip, finder=env.finder).ensure("radiomics")
    assert env.pip_calls == []


def test_missing_lists_each_package_once():
    env = FakeEnvironment({"SimpleITK"})
    names = [r.module for r in missing(["segment", "radiomics"], env.finder)]
    assert names == ["scipy", "radiomics"]
    with pytest.raises(SpineAIError, match="unknown task 'nope'"):
        missing(["nope"])


def test_confirm_once_then_install_with_progress():
    env = FakeEnvironment({"SimpleITK"})
    asked = []
    installer = DependencyInstaller(lambda text, details: asked.append(details) or True, env.pip,
                                    progress=lambda *a: env.progress.append(a), finder=env.finder)
    installer.ensure("radiomics", "classify")
    assert len(asked) == 1 and "pyradiomics-bhklab>=3.1.4" in asked[0] and "xgboost-cpu" in asked[0]
    assert env.pip_calls == ["pyradiomics-bhklab>=3.1.4", "scikit-learn>=1.4", "xgboost-cpu>=2.1", "safetensors>=0.4"]
    assert env.progress[-1] == (4, 4, "packages installed")


def test_declined_is_remembered():
    env = FakeEnvironment(set())
    asked = []
    installer = DependencyInstaller(lambda *a: asked.append(1) or False, env.pip, finder=env.finder)
    for _ in range(2):
        with pytest.raises(SpineAIError, match="installation was declined"):
            installer.ensure("radiomics")
    assert len(asked) == 1 and env.pip_calls == []


def test_torch_only_through_the_pytorch_extension():
    env = FakeEnvironment(set())
    installer = DependencyInstaller(lambda *a: True, env.pip, install_torch=lambda: None, finder=env.finder)
    with pytest.raises(SpineAIError, match="install the 'PyTorch' extension"):
        installer.ensure("deep")
    assert env.pip_calls == []  # never pip torch

    def install_torch():
        env.installed.add("torch")
        return types.SimpleNamespace(__version__="2.5")

    DependencyInstaller(lambda *a: True, env.pip, install_torch=install_torch, finder=env.finder).ensure("deep")
    assert "torch" in env.installed and env.pip_calls == []


def test_device_choice_honours_forced_cpu():
    gpu = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    none = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    broken = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: 1 / 0))
    assert choose_device(False, gpu) == "cuda"
    assert choose_device(True, gpu) == "cpu"
    assert choose_device(False, none) == "cpu"
    assert choose_device(False, broken) == "cpu"
