"""The module files against Slicer's own framework (harness: ScriptedLoadableModule,
parameterNodeWrapper and SampleData from Slicer v5.10.0) over a real slicer-core scene:
self-tests as Slicer runs them, parameter nodes, and the sample-data registration."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import slicer

MODULES = ["SpineAI", "SpineAIRadiomics", "SpineAILumbar"]

DEFAULTS = {
    "SpineAI": {"useTable": False, "inputVolume": None, "inputSegmentation": None, "inputTable": None,
                "tableRow": 1, "modelId": "", "forceCpu": False, "inputPoints": None, "imageModelId": "",
                "heatmapMethod": "gradcam", "heatmapOpacity": 0.5, "heatmapThreshold": 0.2,
                "radiographVolume": None, "radiographModelId": ""},
    "SpineAIRadiomics": {"inputVolume": None, "lesionPoints": None, "useExistingSegmentation": False,
                         "inputSegmentation": None, "mode": "lesion", "method": "auto", "forceCpu": False,
                         "boundingSegmentation": None, "addPoints": None, "removePoints": None,
                         "outputSegmentation": None, "outputTable": None},
    "SpineAILumbar": {"sagittalT1": None, "sagittalT2": None, "axialT2": None, "levelPoints": None, "forceCpu": False},
}


def test_without_the_harness_the_tests_say_where_it_goes(monkeypatch, tmp_path):
    import slicer_harness

    monkeypatch.setenv(slicer_harness.HARNESS_VARIABLE, str(tmp_path / "nowhere"))
    assert slicer_harness.harness_folder() is None
    assert slicer_harness.missing_reason().startswith("Slicer's framework files are absent: set SPINEAI_SLICER_HARNESS")


def test_the_framework_is_slicers_own(module_files, slicer_framework):
    module_files("SpineAILumbar")
    for name in ("slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"):
        assert Path(sys.modules[name].__file__).resolve().is_relative_to(slicer_framework.resolve()), name


@pytest.mark.parametrize("module", MODULES)
def test_module_self_test_runs_as_slicer_runs_it(module_files, module, caplog):
    mod = module_files(module)
    assert mod.moduleObject.parent.title.startswith("SpineAI")
    caplog.set_level(logging.INFO)
    slicer.selfTests[module](msec=0)  # what the Self Tests module and ctest call
    assert "passed" in caplog.text


def test_radiomics_self_test_without_pyradiomics_skips_only_extraction(module_files, monkeypatch, caplog):
    # The Slicer factory's test build has no PyRadiomics: the self-test still segments, and says so.
    monkeypatch.setitem(sys.modules, "radiomics", None)
    mod = module_files("SpineAIRadiomics")
    caplog.set_level(logging.INFO)
    slicer.selfTests["SpineAIRadiomics"](msec=0)
    assert "feature extraction skipped: PyRadiomics is not installed" in caplog.text
    assert "bad input test passed" in caplog.text
    assert mod.SpineAIRadiomicsLogic().getParameterNode().mode == "lesion"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_node_defaults(module_files, scene, module):
    mod = module_files(module)
    wrapped = getattr(mod, f"{module}Logic")().getParameterNode()
    assert wrapped.parameterNode.GetSingletonTag() == module
    assert scene.GetSingletonNode(module, "vtkMRMLScriptedModuleNode") is wrapped.parameterNode
    assert {name: getattr(wrapped, name) for name in DEFAULTS[module]} == DEFAULTS[module]
    assert set(type(wrapped).allParameters) == set(DEFAULTS[module])


def _reload_scene(scene):
    scene.SetSaveToXMLString(1)
    scene.Commit()
    loaded = slicer.vtkMRMLScene()
    loaded.SetLoadFromXMLString(1)
    loaded.SetSceneXMLString(scene.GetSceneXMLString())
    loaded.Import()
    return loaded


def test_parameter_nodes_survive_a_scene_save_and_load(module_files, scene, monkeypatch):
    radiomics, classify = module_files("SpineAIRadiomics"), module_files("SpineAI")
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2 sag")
    bounds = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "vertebrae")
    p = radiomics.SpineAIRadiomicsLogic().getParameterNode()
    p.inputVolume, p.boundingSegmentation, p.mode, p.useExistingSegmentation = volume, bounds, "vertebral-body", True
    q = classify.SpineAILogic().getParameterNode()
    q.tableRow, q.modelId, q.forceCpu = 7, "sdmet-lifex-logreg@1.0.0", True

    loaded = _reload_scene(scene)
    monkeypatch.setattr(slicer, "mrmlScene", loaded)
    p2 = radiomics.SpineAIRadiomicsLogic().getParameterNode()
    assert p2.parameterNode is not p.parameterNode
    assert p2.inputVolume is loaded.GetFirstNodeByName("T2 sag") and p2.inputVolume is not None
    assert p2.boundingSegmentation is loaded.GetFirstNodeByName("vertebrae")
    assert (p2.mode, p2.useExistingSegmentation, p2.lesionPoints) == ("vertebral-body", True, None)
    q2 = classify.SpineAILogic().getParameterNode()
    assert (q2.tableRow, q2.modelId, q2.forceCpu, q2.useTable) == (7, "sdmet-lifex-logreg@1.0.0", True, False)


def test_parameter_nodes_refuse_invalid_values(module_files, scene):
    radiomics, classify = module_files("SpineAIRadiomics"), module_files("SpineAI")
    p = radiomics.SpineAIRadiomicsLogic().getParameterNode()
    with pytest.raises(ValueError, match=r"Value is disc, but must be in one of the following: \['lesion', 'vertebral-body'\]"):
        p.mode = "disc"
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "not a volume")
    with pytest.raises(TypeError, match="Value must be of type .*vtkMRMLScalarVolumeNode"):
        p.inputVolume = table
    q = classify.SpineAILogic().getParameterNode()
    with pytest.raises(ValueError, match=r"within range \[1, 100000\], is 0"):
        q.tableRow = 0
    assert (p.mode, p.inputVolume, q.tableRow) == ("lesion", None, 1)  # refused values change nothing


def test_sample_data_registers_through_slicers_sampledata(module_files, scene):
    import SampleData

    assert Path(SampleData.__file__).name == "SampleData.py" and "slicer-5.10.0" in SampleData.__file__
    module_files("SpineAIRadiomics")
    slicer.app.emit("startupCompleted")  # the module connected registerSampleData to it
    sources = SampleData.SampleDataLogic.sampleDataSourcesByCategory("SpineAI")
    assert [s.sampleName for s in sources] == ["SpineAIPhantomMET", "SpineAIPhantomSD", "SpineAIPhantomSTB"]
    assert all(Path(s.thumbnailFileName).is_file() for s in sources)
    source = SampleData.SampleDataLogic().sourceForSampleName("SpineAIPhantomSD")
    volume, points, vertebrae = source.customDownloader(source)  # what the Sample Data button calls
    assert volume.GetName() == "SpineAI phantom SD" and scene.IsNodePresent(volume)
    assert points.GetNumberOfControlPoints() == 1
    assert vertebrae.GetSegmentation().GetNumberOfSegments() == 5
    slicer.app.emit("startupCompleted")  # registering twice keeps one entry each
    assert len(SampleData.SampleDataLogic.sampleDataSourcesByCategory("SpineAI")) == 3
