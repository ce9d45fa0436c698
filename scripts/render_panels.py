"""Render the pictures of the Slicer extension without the Slicer application.

    python scripts/render_panels.py            # everything below
    python scripts/render_panels.py --panels   # only the module panels

- Panels: each module's Qt Designer ``.ui`` loaded offscreen with Qt for Python. Slicer's own
  widgets (CTK, qMRML) do not exist outside Slicer, so the renderer maps each to the plain Qt widget
  it looks like (collapsible button -> group box, node selector -> combo box showing a node name,
  markups place widget -> button). Needs ``pip install PySide6-Essentials`` (rendering only: not a
  dependency of SpineAI or of its tests).
- Slice view: the SpineAIRadiomics result on the generated phantom, computed by the module's real
  logic against an MRML scene (slicer-core): volume node -> segment from a point -> segmentation node,
  read back from the node and drawn over the slice with matplotlib.
- Icons: module icons, the extension icon and the sample-data thumbnail, drawn from the phantom.

Outputs go to Resources/Screenshots and the modules' Resources/Icons.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("SpineAI", "SpineAIRadiomics", "SpineAILumbar")
SHOTS = ROOT / "Resources" / "Screenshots"

# What each node selector shows in the picture: (parameter name -> node name).
EXAMPLE_NODES = {
    "inputVolume": "SpineAI phantom MET",
    "lesionPoints": "Lesion points",
    "addPoints": "None",
    "removePoints": "None",
    "inputSegmentation": "SpineAI phantom MET SpineAI lesions",
    "boundingSegmentation": "SpineAI phantom MET vertebrae",
    "outputSegmentation": "SpineAI phantom MET SpineAI lesions",
    "outputTable": "SpineAI phantom MET SpineAI features",
    "inputTable": "SpineAI phantom MET SpineAI features",
    "sagittalT1": "None",
    "sagittalT2": "sag T2 STIR",
    "axialT2": "ax T2",
}


# ---- panels ---------------------------------------------------------------------------------

def _plain_qt_ui(path: Path) -> bytes:
    """The .ui with Slicer's custom widgets mapped onto plain Qt widgets."""
    tree = ET.parse(path)
    root = tree.getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        props = {p.get("name"): p for p in widget.findall("property")}
        if cls in ("qMRMLWidget", "qSlicerWidget"):
            widget.set("class", "QWidget")
        elif cls == "ctkCollapsibleButton":
            widget.set("class", "QGroupBox")
            if "text" in props:
                props["text"].set("name", "title")
            for name in ("collapsed",):
                if name in props:
                    widget.remove(props[name])
        elif cls == "qMRMLNodeComboBox":
            widget.set("class", "QComboBox")
            for name, prop in props.items():
                if name not in ("toolTip", "SlicerParameterName", "enabled"):
                    widget.remove(prop)
        elif cls == "qSlicerMarkupsPlaceWidget":
            widget.set("class", "QPushButton")
            ET.SubElement(ET.SubElement(widget, "property", name="text"), "string").text = "Place a point"
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    return ET.tostring(root, encoding="utf-8")


def _panel_state(module: str) -> dict[str, str]:
    """Texts that the panel shows in use, taken from the real logic where it exists."""
    if module == "SpineAILumbar":
        from spineai.image import Volume
        from spineai.phantom import make_spine_phantom
        import numpy as np
        import slicer

        from SpineAICommon import mrml
        from SpineAILumbarLib.logic import LumbarLogic

        scene = slicer.vtkMRMLScene()
        phantom = make_spine_phantom(seed=4, lesion_kind=None)
        sag = mrml.add_volume_node(scene, phantom.image, "sag T2 STIR")
        ax = mrml.add_volume_node(scene, Volume(np.zeros((20, 64, 64), np.int16), (0.7, 0.7, 4.0)), "ax T2")
        report = LumbarLogic().assessInputs(None, sag, ax)
        return {"reportTextEdit": report.text(), "statusLabel": f"{len(report.present)} of 3 series usable; grading uses the series present."}
    if module == "SpineAIRadiomics":
        return {"statusLabel": "created table 'SpineAI phantom MET SpineAI features': 1 row(s) of features",
                "progressBar": "100"}
    return {"statusLabel": "Choose a lesion and a model, then press Classify."}


def render_panels(out: Path) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QByteArray, QBuffer, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QPlainTextEdit, QProgressBar

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    written = []
    for module in MODULES:
        data = QByteArray(_plain_qt_ui(ROOT / module / "Resources" / "UI" / f"{module}.ui"))
        buffer = QBuffer(data)
        buffer.open(QIODevice.ReadOnly)
        panel = QUiLoader().load(buffer)
        for combo in panel.findChildren(QComboBox):
            name = combo.property("SlicerParameterName")
            if name in EXAMPLE_NODES and combo.count() == 0:
                combo.addItem(EXAMPLE_NODES[name])
        if module == "SpineAI":
            model = panel.findChild(QComboBox, "modelComboBox")
            model.addItem("(choose a model)")
        from spineai import RESEARCH_USE_NOTICE

        panel.findChild(QLabel, "disclaimerLabel").setText(RESEARCH_USE_NOTICE)
        for name, text in _panel_state(module).items():
            child = panel.findChild(QLabel, name) or panel.findChild(QPlainTextEdit, name) or panel.findChild(QProgressBar, name)
            if isinstance(child, QProgressBar):
                child.setValue(int(text))
            elif isinstance(child, QPlainTextEdit):
                child.setPlainText(text)
            else:
                child.setText(re.sub("<[^>]+>", "", text))
        panel.resize(420, panel.sizeHint().height() + 40)
        path = out / f"{module}.png"
        panel.grab().save(str(path))
        written.append(path)
    return written


# ---- slice view and icons -------------------------------------------------------------------

def _phantom_result():
    """Phantom volume + the segmentation the module's logic makes from a click on the lesion."""
    import numpy as np
    import slicer

    from SpineAICommon import mrml
    from SpineAIRadiomicsLib.logic import RadiomicsLogic

    scene = slicer.vtkMRMLScene()
    logic = RadiomicsLogic(scene)
    volume_node, points, vertebrae = logic.loadPhantom("MET", seed=0)
    segmentation = logic.segment(volume_node, points, "lesion", boundingNode=vertebrae)
    image = mrml.volume_from_node(volume_node)
    (segment_id,) = mrml.segment_ids(segmentation)
    mask = mrml.mask_from_segment(segmentation, segment_id, image)
    ras = np.array(mrml.control_points_ras(points)[0][1])
    return image, mask, ras


def render_slice(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    image, mask, ras = _phantom_result()
    i, j, k = (int(round(v)) for v in image.ras_to_ijk(ras))
    # Sagittal slice k: rows j (superior -> inferior), columns i (anterior -> posterior).
    fig, ax = plt.subplots(figsize=(5.2, 6.4), dpi=110)
    fig.patch.set_facecolor("black")
    ax.imshow(image.array[k], cmap="gray", vmin=np.percentile(image.array, 1), vmax=np.percentile(image.array, 99.5))
    ax.contour(mask[k], levels=[0.5], colors=["#f2c01a"], linewidths=1.6)
    ax.plot([i], [j], marker="o", markersize=6, color="#ff4040", markeredgecolor="white")
    ax.set_axis_off()
    ax.set_title("SpineAI Radiomics: lesion segmented from one click", color="white", fontsize=10)
    path = out / "SpineAIRadiomics-slice.png"
    fig.savefig(path, bbox_inches="tight", facecolor="black")
    plt.close(fig)
    return path


def render_icons() -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    image, mask, ras = _phantom_result()
    i, j, k = (int(round(v)) for v in image.ras_to_ijk(ras))
    sl = image.array[k].astype(float)
    lo, hi = np.percentile(sl, 1), np.percentile(sl, 99.5)
    h, w = sl.shape
    crop = (slice(max(j - 70, 0), min(j + 70, h)), slice(max(i - 60, 0), min(i + 80, w)))
    written = []

    def icon(path: Path, overlay: str, size=128):
        fig = plt.figure(figsize=(1, 1), dpi=size)
        ax = fig.add_axes([0, 0, 1, 1])
        ax.imshow(sl[crop], cmap="gray", vmin=lo, vmax=hi, aspect="auto")
        m = mask[k][crop]
        if overlay in ("contour", "fill"):
            ax.contour(m, levels=[0.5], colors=["#f2c01a"], linewidths=1.5)
        if overlay == "fill":
            ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.55, aspect="auto")
        if overlay == "levels":
            for y in range(10, sl[crop].shape[0], 38):
                ax.axhline(y, color="#4fc3f7", linewidth=1.2)
        ax.set_axis_off()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=size, transparent=False)
        plt.close(fig)
        written.append(path)

    icon(ROOT / "SpineAI" / "Resources" / "Icons" / "SpineAI.png", "fill")
    icon(ROOT / "SpineAIRadiomics" / "Resources" / "Icons" / "SpineAIRadiomics.png", "contour")
    icon(ROOT / "SpineAILumbar" / "Resources" / "Icons" / "SpineAILumbar.png", "levels")
    icon(ROOT / "SpineAIRadiomics" / "Resources" / "Icons" / "SpineAIPhantom.png", "none")
    icon(ROOT / "Resources" / "Icons" / "SpineAI.png", "fill")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", action="store_true", help="only the module panels")
    args = parser.parse_args(argv)
    for path in [ROOT / "src", *(ROOT / m for m in MODULES)]:
        sys.path.insert(0, str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    written = render_panels(SHOTS)
    if not args.panels:
        written += [render_slice(SHOTS)] + render_icons()
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
