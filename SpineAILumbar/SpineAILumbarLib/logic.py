"""SpineAILumbar logic: which of the three series a lumbar grader reads are present and usable.

The engine has no degeneration grader yet, so this logic grades nothing and says so. What it does
for real: check each series (3D scalar volume, not transformed), find the plane it was acquired in
from its direction matrix, and report what is present, missing or unusable. A future grader must
accept any subset of the series (a study often lacks one), so the report is per series, never
all-or-nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spineai.errors import SpineAIError

from SpineAICommon import mrml

GRADING_UNAVAILABLE = (
    "Degeneration grading is not available in this version of SpineAI: no grading model is shipped yet, "
    "so no grades are shown. For now the module checks which series are present and usable."
)

# role -> (label shown to the user, expected acquisition plane)
SERIES_ROLES = {
    "sagittalT1": ("Sagittal T1", "sagittal"),
    "sagittalT2": ("Sagittal T2 / STIR", "sagittal"),
    "axialT2": ("Axial T2", "axial"),
}

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
        return "\n".join(c.line() for c in self.checks) + "\n\n" + GRADING_UNAVAILABLE


def acquisition_plane(volume) -> str:
    """Plane of the slices: the RAS axis closest to the slice (k) direction."""
    direction_ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(volume.direction)
    normal = direction_ras[:, 2]
    return _PLANES[int(np.argmax(np.abs(normal)))]


class LumbarLogic:
    def checkSeries(self, role: str, node) -> SeriesCheck:
        if role not in SERIES_ROLES:
            raise SpineAIError(f"unknown series role {role!r}; known: {', '.join(SERIES_ROLES)}")
        label, expected = SERIES_ROLES[role]
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
