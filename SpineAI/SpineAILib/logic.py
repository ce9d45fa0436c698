"""SpineAI logic: classify a lesion (SD / MET / STB) with a model bundle, from a feature table row.

A lesion given as a segmentation first goes through SpineAIRadiomics' extraction (a new feature
table node), so both paths classify the same thing: one row of 31 features. The result carries
everything the panel must show beside the probabilities: the demonstration banner, a feature-
definition mismatch, the out-of-distribution verdict and the top contributing features.
Grad-CAM is not offered: the engine has no imaging model to explain yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from spineai.errors import SpineAIError

from SpineAICommon import mrml


@dataclass
class Classification:
    case_id: str
    model_id: str
    probabilities: dict[str, float]
    predicted_class: str
    contributions: list[tuple[str, float, float]]
    contribution_method: str
    in_distribution: bool
    ood_message: str
    banners: list[str] = field(default_factory=list)  # demonstration / definition mismatch: shown on top
    warnings: list[str] = field(default_factory=list)  # everything else the engine warned about

    def text(self) -> str:
        lines = [f"!! {b}" for b in self.banners]
        lines.append(f"{self.case_id}: {self.predicted_class} (model {self.model_id})")
        lines += [f"  {c}: {p:.1%}" for c, p in self.probabilities.items()]
        lines.append(("  " if self.in_distribution else "  !! ") + self.ood_message)
        if self.contributions:
            lines.append(f"  top contributing features ({self.contribution_method}):")
            lines += [f"    {f} = {v:.4g}: {c:+.3f}" for f, v, c in self.contributions]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def table_row_features(table_node, row: int) -> tuple[str, dict[str, float], str | None]:
    """(case id, feature mapping, feature definition or None) of one row of a table node.

    A SpineAIRadiomics table says its features are the engine's PyRadiomics ones; any other table
    (e.g. a LIFEx export loaded as a table) leaves the definition to the model's name matching.
    """
    from spineai.featureset import DEFINITION_PYRADIOMICS

    columns, rows = mrml.table_rows(table_node, "feature table")
    if not rows:
        raise SpineAIError(f"the table '{table_node.GetName()}' has no rows")
    if not 0 <= row < len(rows):
        raise SpineAIError(f"row {row + 1} does not exist in '{table_node.GetName()}' (it has {len(rows)} row(s))")
    record = rows[row]
    engine_names = json.loads(table_node.GetAttribute("SpineAI.features") or "null")
    if engine_names:
        features = {name: record[name] for name in engine_names}
        definition = DEFINITION_PYRADIOMICS
    else:
        features = {k: v for k, v in record.items() if isinstance(v, float)}
        definition = None
    case_id = str(record.get("id") or record.get(columns[0]) or f"row {row + 1}")
    return case_id, features, definition


class ClassifyLogic:
    """``forceCpu``: a setting read wherever torch would run a model; today's bundles run in numpy."""

    def __init__(self):
        self.forceCpu = False
        self._bundles = {}

    def listModels(self) -> list[tuple[str, str]]:
        """(id, label) of the models the registry knows; empty when it lists none."""
        from spineai.models import registry

        return [(entry_id, label) for entry_id, label in registry_entries(registry)]

    def loadModel(self, path_or_id: str):
        from spineai.models.bundle import load_bundle

        if not path_or_id:
            raise SpineAIError("no model selected: choose a model from the list or a bundle file")
        if path_or_id not in self._bundles:  # bundles are verified (sha256) once per session
            self._bundles[path_or_id] = load_bundle(path_or_id)
        return self._bundles[path_or_id]

    def device(self, bundle) -> str:
        """Where the model runs: 'cpu' for numpy models; torch models honour the forced-CPU switch."""
        if str(bundle.card.get("model", {}).get("framework", "numpy")) != "torch":
            return "cpu"
        from SpineAICommon.dependencies import choose_device

        return choose_device(self.forceCpu)

    def classifyFeatures(self, bundle, case_id: str, features: dict, definition: str | None) -> Classification:
        prediction = bundle.predict(features, feature_definition=definition)
        banners, warnings = [], []
        for w in prediction.warnings:
            if w.startswith("DEMONSTRATION") or "feature definitions do not match" in w:
                banners.append(w)
            elif not w.startswith("this case lies outside the training data"):  # shown as the OOD line
                warnings.append(w)
        if bundle.is_demonstration and not any(b.startswith("DEMONSTRATION") for b in banners):
            banners.insert(0, bundle.banner())
        return Classification(
            case_id=case_id, model_id=str(bundle.id or bundle.source), probabilities=dict(prediction.probabilities),
            predicted_class=prediction.predicted_class, contributions=list(prediction.contributions),
            contribution_method=prediction.contribution_method, in_distribution=prediction.ood.in_distribution,
            ood_message=prediction.ood.message(), banners=banners, warnings=warnings)

    def classifyTableRow(self, bundle, table_node, row: int = 0) -> Classification:
        if table_node is None:
            raise SpineAIError("no feature table selected: extract features in SpineAI Radiomics or pick a table")
        case_id, features, definition = table_row_features(table_node, row)
        return self.classifyFeatures(bundle, case_id, features, definition)


def registry_entries(registry) -> list[tuple[str, str]]:
    """(id@version, label) for each radiomic classifier ``registry.list_models()`` knows."""
    from spineai.models.registry import model_choices

    return model_choices("classification", registry.list_models())
