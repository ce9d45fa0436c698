"""Fixtures for the Slicer-module tests, run without the Slicer application.

(This folder is not named `slicer`: `Testing/` is on sys.path under pytest, and slicer-core's
`slicer` package would then import every file of a `Testing/slicer/` folder as `slicer.<name>`.)

The MRML work is real: scenes and nodes come from the PyPI package ``slicer-core``. The module
files run against Slicer's own framework (``ScriptedLoadableModule``, ``parameterNodeWrapper``,
``SampleData`` from Slicer v5.10.0, see slicer_harness.py), with only ``qt``, ``ctk`` and
``slicer.i18n`` stood in for. Tests that import a module file ask for ``module_files``, which skips
with the reason when the harness folder is absent; the Lib logic tests need only slicer-core.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SpineAI", "SpineAIRadiomics", "SpineAILumbar")

# What Slicer puts on sys.path for a source checkout ("Add module paths"), plus the engine.
for path in [ROOT / "src", *(ROOT / m for m in MODULES)]:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

slicer = pytest.importorskip("slicer", reason="the Slicer-module tests need the PyPI package slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed `slicer` package is not slicer-core (another package overwrote it)", allow_module_level=True)


# What Slicer's Segmentations module registers at start-up: binary labelmap <-> closed surface.
_converters = slicer.vtkSegmentationConverterFactory.GetInstance()
_converters.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
_converters.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


@pytest.fixture
def scene():
    """A fresh MRML scene, also set as ``slicer.mrmlScene`` (what the module classes read in Slicer)."""
    scene = slicer.vtkMRMLScene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)
    if previous is None:
        del slicer.mrmlScene
    else:
        slicer.mrmlScene = previous


@pytest.fixture(scope="session")
def phantom_met():
    from spineai.phantom import make_spine_phantom

    return make_spine_phantom(seed=5, lesion_kind="MET")




# ---- module files over Slicer's framework ----------------------------------------------------

@pytest.fixture(scope="session")
def slicer_framework():
    import slicer_harness

    if slicer_harness.harness_folder() is None:
        pytest.skip(slicer_harness.missing_reason())
    return slicer_harness.install()


@pytest.fixture
def module_files(slicer_framework, scene, monkeypatch):
    """``module_files('SpineAIRadiomics')``: import a module file and create its module object, as
    Slicer does at start-up (which also registers its self-test in ``slicer.selfTests``)."""
    import slicer_harness

    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace())
    monkeypatch.setattr(slicer, "app", slicer_harness.FakeApplication())
    monkeypatch.setattr(slicer, "selfTests", {}, raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", slicer_harness.load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", slicer_harness.child_widget_variables)

    def load(name: str):
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        module.moduleObject = getattr(module, name)(slicer_harness.module_parent(name, module.__file__))
        return module

    yield load
    for name in MODULES:
        sys.modules.pop(name, None)
