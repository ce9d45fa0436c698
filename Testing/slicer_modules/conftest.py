"""Fixtures for the Slicer-module tests, run without the Slicer application.

(This folder is not named `slicer`: `Testing/` is on sys.path under pytest, and slicer-core's
`slicer` package would then import every file of a `Testing/slicer/` folder as `slicer.<name>`.)

The MRML work is real: scenes, volume / segmentation / markups / table nodes come from the PyPI
package ``slicer-core``. What slicer-core lacks is the application layer; the only stand-ins here
are the module scaffolding classes that a module file imports at load time:
``slicer.ScriptedLoadableModule`` (the four base classes) and ``slicer.parameterNodeWrapper``
(the decorator and its ``Choice`` annotation). They are installed only by the ``module_files``
fixture, which the tests that import a module file ask for.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest
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




# ---- module scaffolding stand-ins (application layer that slicer-core does not ship) -----------

def _shim_scripted_loadable_module():
    mod = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = type(self).__name__.removesuffix("Logic")

        def getParameterNode(self):
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(mod, cls.__name__, cls)
    mod.__all__ = [cls.__name__ for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                             ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]
    return mod


def _shim_parameter_node_wrapper():
    mod = types.ModuleType("slicer.parameterNodeWrapper")

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

    def parameterNodeWrapper(cls):
        # Records the fields; wrapping a node returns an object holding the defaults.
        fields = dict(getattr(cls, "__annotations__", {}))

        def __init__(self, node=None):
            self.parameterNode = node
            for name in fields:
                setattr(self, name, getattr(cls, name, None))

        cls.__init__ = __init__
        cls.allParameters = fields
        return cls

    mod.Choice, mod.WithinRange, mod.parameterNodeWrapper = Choice, WithinRange, parameterNodeWrapper
    return mod


@pytest.fixture
def module_files(scene, monkeypatch):
    """Import a module file (``module_files('SpineAIRadiomics')``) with the scaffolding stand-ins."""
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _shim_scripted_loadable_module())
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", _shim_parameter_node_wrapper())

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    yield load
    for name in MODULES:
        sys.modules.pop(name, None)
