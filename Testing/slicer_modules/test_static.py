"""Static checks of what only the Slicer application runs: CMake lists, .ui files, catalog entry, imports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SpineAI", "SpineAIRadiomics", "SpineAILumbar")
HEAVY = ("torch", "monai", "radiomics", "SimpleITK", "sklearn", "xgboost", "safetensors", "scipy")


def _cmake_list(text: str, variable: str, module: str) -> set[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return {item.replace("${MODULE_NAME}", module) for item in match.group(1).split()}


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_listed_in_its_cmakelists(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text()
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    on_disk_py = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    on_disk_res = {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert scripts == on_disk_py, f"scripts listed vs on disk differ: {scripts ^ on_disk_py}"
    assert resources == on_disk_res, f"resources listed vs on disk differ: {resources ^ on_disk_res}"
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert f"Resources/UI/{module}.ui" in resources and f"Resources/Icons/{module}.png" in resources


def test_top_level_cmakelists():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key} ", text), key
    assert [m for m in re.findall(r"add_subdirectory\((\w+)\)", text)] == list(MODULES)
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text and "include(${Slicer_EXTENSION_CPACK})" in text
    # The engine ships from its own source folder: every .py and every resource file is matched.
    assert "${CMAKE_CURRENT_SOURCE_DIR}/src/spineai/*.py" in text
    assert "${CMAKE_CURRENT_SOURCE_DIR}/src/spineai/resources/*" in text
    assert "ctkMacroCompilePythonScript" in text and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text


# From Slicer/ExtensionsIndex scripts/check_description_files.py (main branch, read 2026-11):
# the categories it accepts, and how it reads CMakeLists.txt (regular expressions on the text).
ACCEPTED_EXTENSION_CATEGORIES = [
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
]
ICON_URL = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
SCREENSHOT_URLS = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'
RAW_PREFIX = "https://raw.githubusercontent.com/SpineAI/SlicerSpineAI/main/"


def test_catalog_entry_passes_the_extensionsindex_checks():
    path = ROOT / "SpineAI.json"
    entry = json.loads(path.read_text())
    name = path.stem
    assert not name.lower().startswith("slicer")  # check_extension_name
    assert entry["category"] in ACCEPTED_EXTENSION_CATEGORIES  # check_category
    repo = entry["scm_url"].rsplit("/", 1)[-1].removesuffix(".git")
    assert repo.startswith("Slicer")  # check_git_repository_name wants "slicer" in it
    assert entry["scm_url"].split("://")[0] in ("git", "https")  # check_scm_url_syntax
    assert "\r" not in path.read_bytes().decode()  # check_json_file_format: LF only
    assert (ROOT / "LICENSE").is_file()  # check_license_file
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", text, re.I)[0] == name  # check_cmakelists_content
    icons = re.findall(ICON_URL, text, re.I | re.M)
    screenshots = re.findall(SCREENSHOT_URLS, text, re.I | re.M)
    assert icons and screenshots, "icon and screenshot URLs must be literal strings"
    urls = [icons[0].strip(), *screenshots[0].split()]
    for url in urls:  # literal https:// URLs of files that exist in this repository
        assert url.startswith(RAW_PREFIX), url
        assert (ROOT / url[len(RAW_PREFIX):]).is_file(), url
        assert url.endswith(".png")
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', text).group(1)
    assert homepage.startswith("https://github.com/SpineAI/" + repo)


def _parameter_fields(module: str) -> dict[str, str]:
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{module}ParameterNode":
            decorators = [d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in node.decorator_list]
            assert "parameterNodeWrapper" in decorators
            return {n.target.id: ast.unparse(n.annotation) for n in node.body if isinstance(n, ast.AnnAssign)}
    raise AssertionError(f"{module}ParameterNode not found")


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_and_parameter_names_match_fields(module):
    root = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()
    assert root.tag == "ui" and root.find("class").text == module
    fields = _parameter_fields(module)
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert bound, "no widget is bound to the parameter node"
    assert set(bound) <= set(fields), f"unknown parameter names in the .ui: {set(bound) - set(fields)}"
    for name, cls in bound.items():  # the widget kind suits the field's type
        annotation = fields[name]
        if cls == "qMRMLNodeComboBox":
            assert annotation.startswith("vtkMRML"), (name, annotation)
        elif cls == "QCheckBox":
            assert annotation == "bool", (name, annotation)
        elif cls == "QComboBox":
            assert "Choice(" in annotation, (name, annotation)
    # Node selectors list the node type of their field.
    for widget in root.iter("widget"):
        names = [p for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        if widget.get("class") == "qMRMLNodeComboBox" and names:
            types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
            assert types == [fields[names[0].find("string").text]]
    # Every custom widget used is declared, and the widget names the module code uses exist.
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("q", "ctk"))} <= declared
    names = {w.get("name") for w in root.iter("widget")}
    code = (ROOT / module / f"{module}.py").read_text()
    for attr in set(re.findall(r"self\.ui\.(\w+)", code)):
        assert attr in names, f"{module}.py uses self.ui.{attr}, absent from the .ui"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_structure(module):
    path = ROOT / module / f"{module}.py"
    tree = ast.parse(path.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test", "ParameterNode"):
        assert f"{module}{suffix}" in classes
    assert len(path.read_text().splitlines()) < 400, "engine work belongs in spineai/"
    assert "RESEARCH_USE_NOTICE" in path.read_text()  # help text / panel carry the disclaimer
    assert (ROOT / module / "Resources" / "Icons" / f"{module}.png").stat().st_size > 500


@pytest.mark.parametrize("module", MODULES)
def test_module_files_import_nothing_heavy_at_top_level(module):
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    top = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            top.append((node.module or "").split(".")[0])
    assert not set(top) & set(HEAVY), set(top) & set(HEAVY)
    assert "qt" not in top and "ctk" not in top  # Qt only inside widget methods (CI loads the rest)


def test_lib_packages_import_nothing_heavy():
    code = (
        "import sys; sys.path[:0] = {paths!r}\n"
        "import SpineAICommon.mrml, SpineAICommon.jobs, SpineAICommon.dependencies, SpineAICommon.worker\n"
        "import SpineAIRadiomicsLib.logic, SpineAIRadiomicsLib.compute, SpineAILumbarLib.logic, SpineAILib.logic\n"
        "print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    ).format(paths=[str(ROOT / "src"), *(str(ROOT / m) for m in MODULES)], heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_docs_show_every_panel():
    text = (ROOT / "docs" / "slicer.md").read_text()
    for module in MODULES:
        picture = f"Resources/Screenshots/{module}.png"
        assert picture in text and (ROOT / picture).stat().st_size > 5000
    assert "Add module paths" in text or "additional module paths" in text.lower()
