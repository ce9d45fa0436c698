"""SpineAILumbar logic: series roles, grading in the background, results as MRML nodes.

- ``detectRoles``: which loaded volume is which series, from its DICOM series description (or its
  name), with the engine's rules; the user can change any choice, and any role may stay empty.
- ``assessInputs``: each series checked (3D scalar, untransformed, acquisition plane), per series.
- ``startGrading`` / ``finish``: the engine's grader (``spineai.lumbar.grading``) runs through an
  injected runner (a background process in Slicer, cancellable); only when it has finished are new
  nodes made: a table (level x condition x grade probabilities, most likely grade), one point list
  per worst grade with a point at each level, and a Grad-CAM heatmap volume per series.
Nothing here touches a widget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAICommon.jobs import JobLogic, Job, new_job_folder, write_job

# role -> (label shown to the user, expected acquisition plane, the engine's role)
SERIES_ROLES = {
    "sagittalT1": ("Sagittal T1", "sagittal", "sagittal_t1"),
    "sagittalT2": ("Sagittal T2 / STIR", "sagittal", "sagittal_t2"),
    "axialT2": ("Axial T2", "axial", "axial_t2"),
}
GRADE_COLORS = {"Normal/Mild": (0.2, 0.8, 0.2), "Moderate": (1.0, 0.65, 0.0), "Severe": (0.9, 0.1, 0.1)}

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}  # RAS axis closest to the slice normal


@dataclass
class SeriesCheck:
    role: str
    label: str
    node_name: str | None
    status: str  # "present", "missing" or "unusable"
    plane: str | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f" '{self.node_name}'" if self.node_name else ""
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.label}:{where} {self.status}{extra}"


@dataclass
class SeriesReport:
    checks: list[SeriesCheck]

    @property
    def present(self) -> list[str]:
        return [c.role for c in self.checks if c.status == "present"]

    @property
    def missing(self) -> list[str]:
        return [c.role for c in self.checks if c.status != "present"]

    def text(self) -> str:
        return "\n".join(c.line() for c in self.checks)


def acquisition_plane(volume) -> str:
    """Plane of the slices: the RAS axis closest to the slice (k) direction."""
    direction_ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(volume.direction)
    normal = direction_ras[:, 2]
    return _PLANES[int(np.argmax(np.abs(normal)))]


def series_description(node) -> str:
    """The DICOM series description Slicer's DICOM import keeps on the node, else the node's name."""
    for key in ("DICOM.SeriesDescription", "SeriesDescription"):
        value = node.GetAttribute(key)
        if value:
            return value
    return node.GetName() or ""


@dataclass
class Operation:
    """A started grading job and what is needed to turn its results into nodes."""

    job: Job
    nodes: dict  # role -> volume node
    volumes: dict  # role -> Volume

    def poll(self):
        return self.job.poll()

    def cancel(self) -> None:
        self.job.cancel()
        self.job.cleanup()


@dataclass
class GradingNodes:
    table: object
    points: list  # one point list per worst grade present
    heatmaps: dict  # role -> heatmap volume node
    result: dict  # the engine's result document (grades.json)

    @property
    def banner(self) -> str:
        return self.result.get("notice", "")

    def text(self) -> str:
        r = self.result
        lines = [f"!! {self.banner}"] if self.banner else []
        lines.append(f"graded from {', '.join(r['series_present'])}; levels from {r['level_source']} ({r['model']})")
        for level in r["levels"]:
            worse = [f"{g['condition'].replace('_', ' ')}: {g['most_likely']}" for g in r["grades"]
                     if g["level"] == level and g["most_likely"] != "Normal/Mild"]
            lines.append(f"  {level}: {'; '.join(worse) if worse else 'all Normal/Mild'}")
        lines += [f"  warning: {w}" for w in r["warnings"]]
        return "\n".join(lines)


def results_html(result: dict) -> str:
    """The grades as an HTML table: a row per level and condition, the most likely grade highlighted
    (bold, coloured by grade); the demonstration notice above it."""
    from spineai.lumbar import SEVERITIES

    head = f'<p style="color:#8a0000"><b>{result["notice"]}</b></p>' if result.get("notice") else ""
    cells = "".join(f"<th>{s}</th>" for s in SEVERITIES)
    rows = []
    for g in result["grades"]:
        tds = []
        for s in SEVERITIES:
            if s == g["most_likely"]:
                r, gg, b = (int(255 * c) for c in GRADE_COLORS[s])
                tds.append(f'<td style="background:rgba({r},{gg},{b},0.35)"><b>{g[s]:.2f}</b></td>')
            else:
                tds.append(f"<td>{g[s]:.2f}</td>")
        rows.append(f"<tr><td>{g['level']}</td><td>{g['condition'].replace('_', ' ')}</td>{''.join(tds)}</tr>")
    return f"{head}<table><tr><th>level</th><th>condition</th>{cells}</tr>{''.join(rows)}</table>"


class LumbarLogic(JobLogic):
    """``scene`` and ``runner``: see ``SpineAICommon.jobs.JobLogic``."""

    # ---- series ----------------------------------------------------------------------------
    def detectRoles(self) -> dict:
        """{role: volume node or None} from the scalar volumes' series descriptions (first match wins)."""
        from spineai.lumbar.study import series_role

        engine_to_role = {v[2]: k for k, v in SERIES_ROLES.items()}
        found = {role: None for role in SERIES_ROLES}
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            if node.GetClassName() != "vtkMRMLScalarVolumeNode" or node.GetAttribute("SpineAI.heatmap"):
                continue  # label maps and our own heatmaps are no series
            role = engine_to_role.get(series_role(series_description(node)) or "")
            if role and found[role] is None:
                found[role] = node
        return found

    def checkSeries(self, role: str, node) -> SeriesCheck:
        if role not in SERIES_ROLES:
            raise SpineAIError(f"unknown series role {role!r}; known: {', '.join(SERIES_ROLES)}")
        label, expected, _ = SERIES_ROLES[role]
        if node is None:
            return SeriesCheck(role, label, None, "missing")
        try:
            volume = mrml.volume_from_node(node, what=f"{label} series")
        except SpineAIError as exc:
            return SeriesCheck(role, label, node.GetName(), "unusable", notes=[str(exc)])
        plane = acquisition_plane(volume)
        check = SeriesCheck(role, label, node.GetName(), "present", plane)
        if plane != expected:
            check.notes.append(f"acquired in the {plane} plane, expected {expected}")
        return check

    def assessInputs(self, sagittalT1=None, sagittalT2=None, axialT2=None) -> SeriesReport:
        nodes = {"sagittalT1": sagittalT1, "sagittalT2": sagittalT2, "axialT2": axialT2}
        checks = [self.checkSeries(role, nodes[role]) for role in SERIES_ROLES]
        used = {}
        for c in checks:  # the same volume in two roles is almost always a selection slip
            if c.node_name is not None and c.status == "present":
                if nodes[c.role].GetID() in used:
                    c.notes.append(f"same volume as {used[nodes[c.role].GetID()]}")
                used.setdefault(nodes[c.role].GetID(), c.label)
        return SeriesReport(checks)

    def levelPointsFromDiscs(self, discs: dict, name: str = "Disc levels"):
        """A new point list with a point per disc centre ({level: LPS}), named by level."""
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", mrml.unique_name(self.scene, name))
        node.CreateDefaultDisplayNodes()
        for level, lps in discs.items():
            node.AddControlPoint(-float(lps[0]), -float(lps[1]), float(lps[2]), level)
        return node

    def seriesNode(self, heatmapNode):
        """The series a heatmap volume was made on."""
        return self.scene.GetNodeByID(heatmapNode.GetAttribute("SpineAI.series") or "")

    # ---- grading ---------------------------------------------------------------------------
    def startGrading(self, sagittalT1=None, sagittalT2=None, axialT2=None, levelPoints=None, model: str = "",
                     forceCpu: bool = False) -> Operation:
        """Grade the series given (any may be None). ``levelPoints``: optional point list with a point
        at each disc centre labelled 'L1/L2' ... 'L5/S1'; without it the engine's disc localiser finds them."""
        from spineai.image import write_volume
        from spineai.lumbar import LEVELS

        nodes = {role: node for role, node in (("sagittalT1", sagittalT1), ("sagittalT2", sagittalT2),
                                               ("axialT2", axialT2)) if node is not None}
        if not nodes:
            raise SpineAIError("no series selected: choose at least one of sagittal T1, sagittal T2 / STIR, axial T2")
        volumes = {role: mrml.volume_from_node(node, what=f"{SERIES_ROLES[role][0]} series") for role, node in nodes.items()}
        discs = {}
        if levelPoints is not None:
            for label, ras in mrml.control_points_ras(levelPoints, "level points"):
                name = label.strip().upper().replace("-", "/")
                if name not in LEVELS:
                    raise SpineAIError(f"level point '{label}' is not named after a disc level ({', '.join(LEVELS)})")
                discs[name] = [-ras[0], -ras[1], ras[2]]  # RAS -> LPS
        folder = new_job_folder()
        series = {}
        for role, volume in volumes.items():
            name = f"{SERIES_ROLES[role][2]}.nii"
            write_volume(volume, folder / name)
            series[SERIES_ROLES[role][2]] = name
        params = {"series": series, "disc_points_lps": discs, "model": model or "",
                  "device": "cpu" if forceCpu else "auto", "study_id": "slicer"}
        from SpineAILumbarLib import compute

        write_job(folder, compute.TASK, params)
        return Operation(self.runner.start(compute.TASK, params, folder), nodes, volumes)

    def finish(self, op: Operation) -> GradingNodes:
        """Turn a finished job into new nodes; raises the job's error, if any, as SpineAIError."""
        status = op.poll()
        try:
            if not status.finished:
                raise SpineAIError("grading is still running")
            if status.cancelled:
                raise SpineAIError("grading was cancelled; nothing was added to the scene")
            if status.error:
                raise SpineAIError(status.error)
            for node in op.nodes.values():
                if not self.scene.IsNodePresent(node):
                    raise SpineAIError(f"the series '{node.GetName()}' was removed from the scene while grading ran")
            result = json.loads((op.job.folder / "grades.json").read_text(encoding="utf-8"))
            heat = {role: np.load(op.job.folder / f"heatmap_{SERIES_ROLES[role][2]}.npy", allow_pickle=False)
                    for role in op.nodes}
            return self._nodes(op, result, heat)
        finally:
            op.job.cleanup()

    def run(self, op: Operation, timeout: float = 600.0) -> GradingNodes:
        """Wait for a grading job and return its nodes (headless / batch use)."""
        op.job.wait(timeout)
        return self.finish(op)

    def grade(self, sagittalT1=None, sagittalT2=None, axialT2=None, **options) -> GradingNodes:
        return self.run(self.startGrading(sagittalT1, sagittalT2, axialT2, **options))

    def _nodes(self, op: Operation, result: dict, heat: dict) -> GradingNodes:
        from spineai.lumbar import SEVERITIES

        demo = " (DEMONSTRATION)" if result.get("demonstration") else ""
        rows = [{"level": g["level"], "condition": g["condition"].replace("_", " "),
                 **{s: round(g[s], 4) for s in SEVERITIES}, "most likely": g["most_likely"]} for g in result["grades"]]
        table = mrml.new_table_node(self.scene, f"SpineAI lumbar grades{demo}", ["level", "condition", *SEVERITIES, "most likely"],
                                    rows, numeric=set(SEVERITIES))
        table.SetAttribute("SpineAI.demonstration", "1" if result.get("demonstration") else "0")
        points = []
        by_grade: dict = {}
        for level, lps in result["levels"].items():
            worst = max((g for g in result["grades"] if g["level"] == level), key=lambda g: SEVERITIES.index(g["most_likely"]))
            by_grade.setdefault(worst["most_likely"], []).append((level, lps))
        for grade in SEVERITIES:
            if grade not in by_grade:
                continue
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                mrml.unique_name(self.scene, f"SpineAI lumbar levels: worst {grade}{demo}"))
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(*GRADE_COLORS[grade])
            node.GetDisplayNode().SetColor(*GRADE_COLORS[grade])
            for level, lps in by_grade[grade]:
                node.AddControlPoint(-lps[0], -lps[1], lps[2], level)  # LPS -> RAS
            node.SetLocked(True)
            points.append(node)
        heatmaps = {}
        for role, node in op.nodes.items():
            volume = op.volumes[role]
            hnode = mrml.add_volume_node(self.scene, volume.with_array(heat[role]),
                                         mrml.unique_name(self.scene, f"{node.GetName()} lumbar Grad-CAM{demo}"))
            hnode.SetAttribute("SpineAI.heatmap", "1")
            hnode.SetAttribute("SpineAI.series", node.GetID())
            display = hnode.GetDisplayNode()
            if display is not None:
                display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
                display.SetAutoWindowLevel(False)
                display.SetWindowLevel(1.0, 0.5)
            heatmaps[role] = hnode
        return GradingNodes(table, points, heatmaps, result)
