"""Model bundles: a folder or a .zip holding model.json (the card), weights in safe formats and a
manifest of sha256 hashes. No pickle anywhere: loading parses JSON, safetensors and XGBoost JSON.

Layout::

    model.json           card: task, classes, features (names, order, definition), preprocessing,
                         training data, metrics with CIs, intended use, demonstration flag, engine
                         version, OOD calibration, and the model's own parameters
    weights.safetensors  arrays (network layers, logistic coefficients, SVM support vectors)
    booster.json         XGBoost model (xgboost and random forest)
    manifest.json        {"files": {name: sha256}}: every other file, checked on load
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from spineai.errors import SpineAIError
from spineai.bundlefile import (BOOSTER, CARD, MANIFEST, WEIGHTS, parse_version, pack_files, read_bundle,  # noqa: F401
                                read_files as _read_files, sha256_bytes, sha256_file, verify_files, write_files)
from spineai.featureset import DEFINITION_LIFEX, DEFINITION_PYRADIOMICS
from spineai.models.estimators import FittedModel
from spineai.models.ood import OODResult, check_ood, table_p_value

ALLOWED_FILES = {CARD, WEIGHTS, BOOSTER}


@dataclass
class Prediction:
    """One case: class probabilities, the predicted class, its top contributing features, the
    out-of-distribution check and any warnings to show beside them."""

    probabilities: dict[str, float]
    predicted_class: str
    contributions: list[tuple[str, float, float]]  # (feature, value, contribution to predicted class)
    contribution_method: str
    ood: OODResult
    warnings: list[str] = field(default_factory=list)
    is_demonstration: bool = False
    case_id: str | None = None

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "probabilities": self.probabilities, "predicted_class": self.predicted_class,
                "contributions": [{"feature": f, "value": v, "contribution": c} for f, v, c in self.contributions],
                "contribution_method": self.contribution_method, "ood": self.ood.to_dict(),
                "warnings": list(self.warnings), "is_demonstration": self.is_demonstration}

    def summary(self) -> str:
        probs = ", ".join(f"{c} {p:.1%}" for c, p in self.probabilities.items())
        lines = [f"{self.case_id + ': ' if self.case_id else ''}{self.predicted_class}  ({probs})",
                 f"  {self.ood.message()}"]
        if self.contributions:
            lines.append("  top features: " + ", ".join(f"{f} {c:+.2f}" for f, _, c in self.contributions[:5]))
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


class ModelBundle:
    """A loaded, verified bundle. ``predict`` takes a mapping feature -> value (one case) or a
    Table / list of mappings (many cases)."""

    def __init__(self, card: dict, model: FittedModel, source: str = "<memory>", sha256: str | None = None,
                 verified: bool = False):
        self.card = card
        self.model = model
        self.source = source
        self.sha256 = sha256
        # True only when the bundle's sha256 is one the package's registry pins: the manifest proves
        # the files agree with each other, not who made them.
        self.verified = verified

    classes = property(lambda self: list(self.card["classes"]))
    feature_names = property(lambda self: list(self.card["features"]["names"]))
    feature_definition = property(lambda self: self.card["features"]["definition"])
    is_demonstration = property(lambda self: bool(self.card.get("demonstration", False)))
    id = property(lambda self: self.card.get("id", ""))
    version = property(lambda self: self.card.get("version", ""))

    def banner(self) -> str | None:
        """Text to show prominently whenever this model's output is shown, or None."""
        if self.is_demonstration:
            return ("DEMONSTRATION MODEL: trained on synthetic phantom lesions; its output means nothing "
                    "about real patients")
        return None

    def unverified_warning(self) -> str:
        return (f"UNVERIFIED MODEL: {self.source} is not a bundle SpineAI's registry lists (sha256 "
                f"{(self.sha256 or 'unknown')[:12]}...); its files are intact but its origin is unknown: anyone can "
                f"edit a bundle and recompute its manifest")

    def _matrix(self, features, feature_definition: str | None, impute: bool):
        from spineai.models.tables import Table, feature_matrix, match_features, table_from_records

        warnings: list[str] = []
        if isinstance(features, Mapping):
            table, single = table_from_records([features]), True
        elif isinstance(features, Table):
            table, single = features, False
        else:
            table, single = table_from_records(list(features)), False
        cols, aliased = match_features(table, self.feature_names)
        definition = feature_definition
        if definition is None and "prov_parameter_set" in table.columns:
            # `spineai features` output carries its provenance, whatever its feature columns are called.
            definition = DEFINITION_PYRADIOMICS
        if definition is None and aliased:
            # The names say which definition the values follow.
            definition = DEFINITION_LIFEX if self.feature_definition == DEFINITION_PYRADIOMICS else DEFINITION_PYRADIOMICS
        if definition is not None and definition != self.feature_definition:
            warnings.append(
                f"feature definitions do not match: the model was trained on {self.feature_definition!r} features, "
                f"these are {definition!r}; the values differ by discretisation, so the probabilities are not valid")
        medians = dict(zip(self.feature_names, self.card["features"]["training_median"]))
        X = feature_matrix(table, cols, impute=dict(zip(cols, medians.values())) if impute else None)
        if impute and not np.isfinite(np.column_stack([table.numeric(c) for c in cols])).all():
            warnings.append("missing feature values were replaced by the training medians (explicit imputation)")
        return X, table, single, warnings

    def predict(self, features, feature_definition: str | None = None, impute: bool = False, top: int = 5):
        """Predict one case (mapping) -> Prediction, or many (Table / list of mappings) -> list.

        ``feature_definition``: where the values come from (``spineai.featureset.DEFINITION_*``);
        a mismatch with the model's adds a warning to each prediction. ``impute=True`` replaces
        missing values by the training medians (and says so); otherwise they are refused.
        """
        X, table, single, warnings = self._matrix(features, feature_definition, impute)
        probs = self.model.predict_proba(X)
        ref = np.asarray(self.card["features"]["training_median"], dtype=np.float64)
        contrib, method = self.model.contributions(X, ref, self.feature_names)
        oods = check_ood(self.card["ood"], X)
        reasons = [w.split(":")[0] for w in warnings if w.startswith("feature definitions do not match")]
        table_p = table_p_value([r.p_value for r in oods]) if len(X) > 1 and oods[0].p_value is not None else 1.0
        if table_p < self.card["ood"].get("table_alpha", 0.0):
            reasons.append(f"the table as a whole does not fit the training data (combined p = {table_p:.1e}): "
                           "another feature definition, scanner or protocol?")
        for r in oods:
            if reasons:
                r.in_distribution, r.reasons = False, list(reasons)
        ids = None if single else table.row_ids()
        out = []
        for i in range(len(X)):
            order = np.argsort(-np.abs(contrib[i]), kind="stable")[:top]
            w = list(warnings)
            if not self.verified:
                w.insert(0, self.unverified_warning())
            if self.is_demonstration:
                w.insert(0, self.banner())
            if not oods[i].in_distribution:
                w.append("this case lies outside the training data: " + oods[i].message())
            out.append(Prediction(
                {c: float(p) for c, p in zip(self.classes, probs[i])}, self.classes[int(probs[i].argmax())],
                [(self.feature_names[j], float(X[i, j]), float(contrib[i, j])) for j in order], method, oods[i], w,
                self.is_demonstration, None if ids is None else ids[i]))
        return out[0] if single else out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for a raw feature matrix in ``feature_names`` order (no checks beyond shape)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise SpineAIError(f"expected an (n, {len(self.feature_names)}) feature matrix, got shape {X.shape}")
        return self.model.predict_proba(X)


# ------------------------------------------------------------------------------------------------
# Saving


def _bundle_files(card: dict, model: FittedModel) -> dict[str, bytes]:
    from safetensors.numpy import save as st_save

    meta, arrays, booster = model.to_parts()
    card = dict(card)
    card["model"] = {**card.get("model", {}), **meta}
    payload = {}
    if arrays:
        payload[WEIGHTS] = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    if booster is not None:
        payload[BOOSTER] = booster
    return pack_files(card, payload)


def save_bundle(card: dict, model: FittedModel, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a bundle: a ``.zip`` file when the path ends so, else a folder. Atomic and verified: a
    failure leaves nothing behind, and an existing path is refused unless ``overwrite``."""
    return write_files(_bundle_files(card, model), path, overwrite)


# ------------------------------------------------------------------------------------------------
# Loading


def bundle_from_files(files: dict[str, bytes], source: str) -> ModelBundle:
    from safetensors.numpy import load as st_load

    card = verify_files(files, source, ALLOWED_FILES)
    arrays = st_load(files[WEIGHTS]) if WEIGHTS in files else {}
    try:
        model = FittedModel.from_parts(card["model"], arrays, files.get(BOOSTER))
    except (KeyError, TypeError) as exc:
        raise SpineAIError(f"{source}: the model card lacks {exc}") from None
    return ModelBundle(card, model, source, sha256_bytes(files[MANIFEST]))


def load_bundle(path_or_id: str | os.PathLike, registry=None) -> ModelBundle:
    """Load and verify a bundle from a folder, a .zip, or a registry id (installed or bundled).

    Every file is checked against the manifest's sha256; a registry entry's sha256 is checked
    against the zip file (or the manifest of a folder) before that.
    """
    files, source, sha256, verified = read_bundle(path_or_id, registry)
    bundle = bundle_from_files(files, source)
    bundle.sha256, bundle.verified = sha256, verified
    return bundle
