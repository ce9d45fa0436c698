"""SpineAI classify logic against a real scene and a real bundle trained on the study's table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAILib.logic import ClassifyLogic, registry_entries
from SpineAIRadiomicsLib.logic import RadiomicsLogic


def _shared_table():
    import os
    from pathlib import Path

    root = os.environ.get("SPINEAI_TEST_DATA")
    path = Path(root or "/nonexistent", "sdmet31", "train.csv")
    if not path.is_file():
        pytest.skip("SPINEAI_TEST_DATA/sdmet31/train.csv is absent (the study's 80-lesion table)")
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from spineai.models.bundle import load_bundle
    from spineai.models.training import train_bundle

    table = _shared_table()
    out = tmp_path_factory.mktemp("model") / "lifex-logreg.zip"
    train_bundle(str(table), "diagnosis", "logreg", out, folds=3, n_boot=50, exclude=["lesion_id", "label"],
                 model_id="sdmet-lifex-logreg")
    return load_bundle(out), table


def _lifex_table_node(scene, table_path, rows=(0, 45)):
    with open(table_path, newline="") as fh:
        records = list(csv.DictReader(fh))
    names = [c for c in records[0] if c not in ("lesion_id", "label", "diagnosis")]
    data = [{"id": records[r]["lesion_id"], **{n: float(records[r][n]) for n in names}} for r in rows]
    return mrml.new_table_node(scene, "LIFEx rows", ["id", *names], data, numeric=set(names)), [records[r]["diagnosis"] for r in rows]


def test_classify_a_lifex_row_like_the_engine(scene, bundle):
    model, table_path = bundle
    node, truth = _lifex_table_node(scene, table_path)
    logic = ClassifyLogic()
    result = logic.classifyTableRow(model, node, 0)
    assert set(result.probabilities) == set(model.classes) and abs(sum(result.probabilities.values()) - 1) < 1e-9
    direct = model.predict(dict(zip(model.feature_names, [mrml.table_rows(node)[1][0][n] for n in model.feature_names])))
    assert result.probabilities == pytest.approx(direct.probabilities)
    assert result.predicted_class == direct.predicted_class
    assert len(result.contributions) == 5 and result.contributions[0][0] in model.feature_names
    assert result.banners == []  # LIFEx values for a LIFEx model: no mismatch banner
    assert result.in_distribution  # a training case lies inside the training data
    assert logic.device(model) == "cpu"


def test_engine_features_on_a_lifex_model_get_the_mismatch_banner_and_ood(scene, bundle):
    model, _ = bundle
    radiomics = RadiomicsLogic(scene)
    volume, points, vertebrae = radiomics.loadPhantom("MET", seed=1)
    table = radiomics.extract(volume, radiomics.segment(volume, points))
    result = ClassifyLogic().classifyTableRow(model, table, 0)
    assert any("feature definitions do not match" in b for b in result.banners)
    assert result.text().startswith("!! feature definitions do not match")
    # The OOD verdict is the engine's, relayed unchanged.
    from spineai.featureset import DEFINITION_PYRADIOMICS

    _, (row,) = mrml.table_rows(table)
    direct = model.predict({n: row[n] for n in json.loads(table.GetAttribute("SpineAI.features"))},
                           feature_definition=DEFINITION_PYRADIOMICS)
    assert result.in_distribution == direct.ood.in_distribution and result.ood_message == direct.ood.message()


def test_out_of_distribution_case_is_flagged(scene, bundle):
    model, table_path = bundle
    node, _ = _lifex_table_node(scene, table_path, rows=(0,))
    columns, (row,) = mrml.table_rows(node)
    far = {**row, **{n: row[n] * 1000 for n in model.feature_names}}
    node2 = mrml.new_table_node(scene, "far", columns, [far], numeric=set(model.feature_names))
    result = ClassifyLogic().classifyTableRow(model, node2, 0)
    assert not result.in_distribution and result.ood_message.startswith("OUT OF DISTRIBUTION")
    assert "  !! OUT OF DISTRIBUTION" in result.text()


def test_bad_table_input(scene, bundle):
    model, table_path = bundle
    logic = ClassifyLogic()
    with pytest.raises(SpineAIError, match="^no feature table selected"):
        logic.classifyTableRow(model, None)
    node, _ = _lifex_table_node(scene, table_path, rows=(0,))
    with pytest.raises(SpineAIError, match=r"row 5 does not exist in 'LIFEx rows' \(it has 1 row\(s\)\)"):
        logic.classifyTableRow(model, node, 4)
    with pytest.raises(SpineAIError, match="no model selected"):
        logic.loadModel("")


def test_registry_listing_adapter():
    class FakeRegistry:
        @staticmethod
        def list_models():
            return [{"id": "demo", "version": "1.0.0", "demonstration": True, "available_locally": True},
                    {"id": "ref", "version": "2.1.0", "available_locally": False}]

    assert registry_entries(FakeRegistry) == [("demo@1.0.0", "demo 1.0.0 (demonstration)"),
                                              ("ref@2.1.0", "ref 2.1.0 (not installed)")]
    np.testing.assert_equal(len(ClassifyLogic().listModels()) >= 0, True)  # the real registry answers
