"""Each module file loads (with the scaffolding stand-ins of conftest.py) and its own
ScriptedLoadableModuleTest, the one Slicer runs, passes against a real slicer-core scene."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("module", ["SpineAI", "SpineAIRadiomics", "SpineAILumbar"])
def test_module_self_test_runs(module_files, module):
    mod = module_files(module)
    getattr(mod, f"{module}Test")().runTest()


@pytest.mark.parametrize("module", ["SpineAI", "SpineAIRadiomics", "SpineAILumbar"])
def test_logic_parameter_node_lives_in_the_scene(module_files, scene, module):
    mod = module_files(module)
    logic = getattr(mod, f"{module}Logic")()
    wrapped = logic.getParameterNode()
    assert wrapped.parameterNode.GetSingletonTag() == module
    assert scene.GetSingletonNode(module, "vtkMRMLScriptedModuleNode") is wrapped.parameterNode


def test_radiomics_module_logic_is_the_lib_logic(module_files, scene):
    mod = module_files("SpineAIRadiomics")
    from SpineAIRadiomicsLib.logic import RadiomicsLogic

    logic = mod.SpineAIRadiomicsLogic()
    assert isinstance(logic, RadiomicsLogic)
    assert logic.scene is scene  # slicer.mrmlScene, read when used
    assert mod.SpineAIRadiomicsParameterNode.allParameters["mode"] is not None
