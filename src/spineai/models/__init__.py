"""SD / MET / STB classifiers on radiomic features: training, honest evaluation, bundles, registry.

Public API (everything here imports without torch; torch is needed only to train networks with
SpineAI's switches: batch normalisation, dropout, Adam, early stopping, class weights):

- ``load_bundle(path_or_id) -> ModelBundle``; ``ModelBundle.predict(features) -> Prediction(s)``
- ``classify_with_demo_model(values) -> Prediction``: the bundled demonstration model on the
  engine's own 31 features (what ``spineai demo`` shows)
- ``train_bundle(table, label_column, model, out, ...)``, ``run_study(table, label_column, out_dir, ...)``
- ``list_models()``, ``install_model(source, sha256=None)``
"""

from __future__ import annotations

from typing import Mapping

from spineai.models.bundle import ModelBundle, Prediction, load_bundle, save_bundle
from spineai.models.ood import OODResult
from spineai.models.registry import install as install_model
from spineai.models.registry import list_models

REFERENCE_MODEL_ID = "sdmet31-reference"
DEMO_MODEL_ID = "spineai-demo-phantom"


def classify_with_demo_model(values: Mapping[str, float]) -> Prediction:
    """Classify one lesion's engine features (``FeatureResult.values``) with the bundled demo model.

    The prediction's warnings start with the demonstration banner; its ``ood`` says whether the
    lesion resembles the phantom lesions the model saw.
    """
    from spineai.featureset import DEFINITION_PYRADIOMICS

    return load_bundle(DEMO_MODEL_ID).predict(dict(values), feature_definition=DEFINITION_PYRADIOMICS)


def train_bundle(*args, **kwargs):
    from spineai.models.training import train_bundle as _tb

    return _tb(*args, **kwargs)


def run_study(*args, **kwargs):
    from spineai.models.study import run_study as _rs

    return _rs(*args, **kwargs)


__all__ = ["ModelBundle", "Prediction", "OODResult", "load_bundle", "save_bundle", "classify_with_demo_model",
           "train_bundle", "run_study", "list_models", "install_model", "REFERENCE_MODEL_ID", "DEMO_MODEL_ID"]
