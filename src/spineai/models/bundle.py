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

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

import spineai
from spineai.errors import SpineAIError
from spineai.image import refuse_existing
from spineai.featureset import DEFINITION_LIFEX, DEFINITION_PYRADIOMICS
from spineai.models.estimators import FittedModel
from spineai.models.ood import OODResult, check_ood, table_p_value

BUNDLE_FORMAT = "spineai-model-bundle"
BUNDLE_FORMAT_VERSION = 1
CARD = "model.json"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BOOSTER = "booster.json"
ALLOWED_FILES = {CARD, WEIGHTS, BOOSTER}
# A fixed timestamp makes a zip's bytes (and so its sha256) depend on the content only.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for p in str(text).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


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

    def __init__(self, card: dict, model: FittedModel, source: str = "<memory>", sha256: str | None = None):
        self.card = card
        self.model = model
        self.source = source
        self.sha256 = sha256

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
    files = {CARD: json.dumps(card, indent=2, allow_nan=False).encode()}
    if arrays:
        files[WEIGHTS] = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    if booster is not None:
        files[BOOSTER] = booster
    manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "files": {name: sha256_bytes(data) for name, data in sorted(files.items())}}
    files[MANIFEST] = json.dumps(manifest, indent=2).encode()
    return files


def save_bundle(card: dict, model: FittedModel, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a bundle: a ``.zip`` file when the path ends so, else a folder. Atomic: a failure leaves
    nothing behind, and an existing path is refused unless ``overwrite``."""
    path = refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = _bundle_files(card, model)
    if path.suffix.lower() == ".zip":
        fd, tmp = tempfile.mkstemp(prefix=".spineai-", suffix=".zip", dir=path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, _ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name])
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a bundle is meant to be shared
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        tmpdir = Path(tempfile.mkdtemp(prefix=".spineai-", dir=path.parent))
        try:
            for name, data in files.items():
                (tmpdir / name).write_bytes(data)
            os.chmod(tmpdir, 0o755)
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmpdir, path)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    return path


# ------------------------------------------------------------------------------------------------
# Loading


def _read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
    if not path.is_file():
        raise SpineAIError(f"model bundle {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any("/" in n or n.startswith(".") for n in names):
                raise SpineAIError(f"{path}: unexpected paths inside the bundle: {', '.join(n for n in names if '/' in n)}")
            return {n: zf.read(n) for n in names}
    except zipfile.BadZipFile:
        raise SpineAIError(f"{path} is neither a model bundle folder nor a zip file") from None


def bundle_from_files(files: dict[str, bytes], source: str) -> ModelBundle:
    from safetensors.numpy import load as st_load

    if MANIFEST not in files:
        raise SpineAIError(f"{source} is not a SpineAI model bundle: no {MANIFEST}")
    try:
        manifest = json.loads(files[MANIFEST])
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise SpineAIError(f"{source}: {MANIFEST} is not a valid bundle manifest") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise SpineAIError(f"{source}: unknown bundle format {manifest.get('format')!r}")
    if int(manifest.get("format_version", 0)) > BUNDLE_FORMAT_VERSION:
        raise SpineAIError(f"{source}: bundle format {manifest.get('format_version')} is newer than this engine reads "
                           f"({BUNDLE_FORMAT_VERSION}); update SpineAI")
    present = set(files) - {MANIFEST}
    unlisted = sorted(present - set(listed))
    missing = sorted(set(listed) - present)
    if unlisted or missing:
        raise SpineAIError(f"{source}: bundle contents do not match its manifest (tampered or incomplete): "
                           f"unlisted files {unlisted or 'none'}, missing files {missing or 'none'}")
    unknown = sorted(set(listed) - ALLOWED_FILES)
    if unknown:
        raise SpineAIError(f"{source}: unexpected files in the bundle: {', '.join(unknown)}")
    bad = [n for n, h in listed.items() if sha256_bytes(files[n]) != h]
    if bad:
        raise SpineAIError(f"{source}: sha256 mismatch for {', '.join(sorted(bad))}: the bundle was modified "
                           f"after it was saved (tampered or corrupt); refusing to load it")
    try:
        card = json.loads(files[CARD])
    except ValueError:
        raise SpineAIError(f"{source}: {CARD} is not valid JSON") from None
    engine = card.get("engine_version", "0")
    if parse_version(engine) > parse_version(spineai.__version__):
        raise SpineAIError(f"{source} was made by SpineAI {engine}, newer than this engine ({spineai.__version__}); "
                           f"update SpineAI to use it")
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
    p = Path(path_or_id)
    if p.exists():
        return bundle_from_files(_read_files(p), str(p))
    from spineai.models import registry as reg

    entry_path, expected = reg.resolve(str(path_or_id), registry)
    files = _read_files(entry_path)
    actual = sha256_file(entry_path) if entry_path.is_file() else sha256_bytes(files.get(MANIFEST, b""))
    if expected and actual != expected:
        raise SpineAIError(f"model {path_or_id!r} at {entry_path}: sha256 {actual} does not match the registry's "
                           f"{expected} (tampered or corrupt)")
    return bundle_from_files(files, str(entry_path))
