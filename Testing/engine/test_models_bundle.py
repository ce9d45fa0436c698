"""Estimators, bundles (save / load / verification), predictions, contributions and the OOD check."""

from __future__ import annotations

import importlib.util
import zipfile

import numpy as np
import pytest

import spineai
from spineai.errors import SpineAIError
from spineai.models.bundle import load_bundle, save_bundle
from spineai.models.estimators import default_config, fit_model
from spineai.models.tables import Table
from spineai.models.training import Dataset, evaluate_config, make_card


def toy(n=60, d=6, classes=("SD", "MET"), seed=0, shift=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(classes)
    X = np.exp(rng.normal(size=(n, d)) * 0.3 + 1.0)  # positive, skewed like radiomic features
    X[:, 0] += shift * y
    X[:, 1] -= 0.5 * shift * (y == len(classes) - 1)
    names = [f"f{j}" for j in range(d)]
    return Dataset(X, y, list(classes), names, None, [f"L{i}" for i in range(n)], "toy.csv", "diagnosis", "custom")


def bundle_for(ds, config, tmp_path, name="m.zip"):
    model = fit_model(config, ds.X, ds.y, len(ds.classes))
    cv = evaluate_config(ds, config, folds=3, n_boot=50)
    card = make_card(ds, model, cv, "toy", "1.0.0", False, "toy model")
    return save_bundle(card, model, tmp_path / name), model


@pytest.mark.parametrize("name,extra", [
    ("logreg", {}), ("svm", {}), ("rf", {"n_estimators": 30}), ("xgboost", {"n_estimators": 30}),
    ("mlp-a", {"iterations": 200}), ("ensemble", {"iterations": 50, "n_estimators": 20}),
    pytest.param("mlp-b", {"iterations": 60, "optimizer": "adam", "batchnorm": True, "dropout": 0.1, "mode": "minibatch",
                           "learning_rate": 0.01, "early_stopping": True, "class_weights": True, "scaling": "standard",
                           "select_k": 4}, id="mlp-b-torch",
                 marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                          reason="network B with SpineAI's switches trains with torch")),
])
def test_roundtrip_predictions_identical(tmp_path, name, extra):
    ds = toy()
    path, model = bundle_for(ds, default_config(name, **extra), tmp_path)
    b = load_bundle(path)
    np.testing.assert_allclose(b.predict_proba(ds.X), model.predict_proba(ds.X), rtol=1e-10, atol=1e-12)
    p = b.predict(dict(zip(ds.feature_names, ds.X[1])))
    assert set(p.probabilities) == {"SD", "MET"} and abs(sum(p.probabilities.values()) - 1) < 1e-9
    assert p.predicted_class == max(p.probabilities, key=p.probabilities.get)
    assert len(p.contributions) == 5 and all(f in ds.feature_names for f, _, _ in p.contributions)
    # the discriminative feature f0 dominates the explanation for a clear case
    if name in ("logreg", "xgboost", "mlp-a"):
        assert p.contributions[0][0] == "f0"
    with zipfile.ZipFile(path) as zf:
        assert not any(n.endswith((".pkl", ".pickle", ".joblib", ".pt")) for n in zf.namelist())


def test_three_classes_softmax(tmp_path):
    ds = toy(90, classes=("SD", "MET", "STB"))
    for name in ("mlp-b", "svm", "xgboost"):
        path, model = bundle_for(ds, default_config(name, iterations=300, n_estimators=30), tmp_path, f"{name}.zip")
        probs = load_bundle(path).predict_proba(ds.X)
        assert probs.shape == (90, 3)
        np.testing.assert_allclose(probs.sum(1), 1.0)
        assert (probs.argmax(1) == ds.y).mean() > 0.6


def test_svm_numpy_decision_matches_sklearn():
    from sklearn.svm import SVC

    ds = toy()
    m = fit_model(default_config("svm"), ds.X, ds.y, 2)
    Z = m.pre.transform(ds.X)
    svc = SVC(kernel="rbf", C=1.0, gamma="scale").fit(Z, ds.y)
    ours = (m.margin(Z) - m.arrays["platt_b"][0]) / m.arrays["platt_a"][0]
    np.testing.assert_allclose(ours, svc.decision_function(Z), atol=1e-8)


def test_xgboost_contributions_sum_to_margin():
    ds = toy()
    m = fit_model(default_config("xgboost", n_estimators=30), ds.X, ds.y, 2)
    contrib, method = m.contributions(ds.X, np.median(ds.X, 0), ds.feature_names)
    import xgboost as xgb

    full = m.booster().predict(xgb.DMatrix(m.pre.transform(ds.X)), pred_contribs=True)
    margin = m.margin(m.pre.transform(ds.X))
    np.testing.assert_allclose(full.sum(1), margin, rtol=1e-5, atol=1e-5)
    sign = np.where(m.predict_proba(ds.X).argmax(1) == 1, 1, -1)
    np.testing.assert_allclose(contrib, full[:, :-1] * sign[:, None], rtol=1e-6)
    assert "SHAP" in method


def test_folder_bundle_and_tampering(tmp_path):
    ds = toy()
    model = fit_model(default_config("logreg"), ds.X, ds.y, 2)
    card = make_card(ds, model, evaluate_config(ds, default_config("logreg"), 3, n_boot=20), "toy", "1.0.0", False, "t")
    folder = save_bundle(card, model, tmp_path / "bundle")
    assert load_bundle(folder).feature_names == ds.feature_names
    with pytest.raises(SpineAIError, match="already exists"):
        save_bundle(card, model, folder)
    # change one weight byte: refused, naming the file
    w = folder / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(SpineAIError, match="sha256 mismatch for weights.safetensors.*tampered"):
        load_bundle(folder)
    # an extra file (e.g. a pickle slipped in) is refused too
    folder2 = save_bundle(card, model, tmp_path / "bundle2")
    (folder2 / "extra.pkl").write_bytes(b"x")
    with pytest.raises(SpineAIError, match=r"unlisted files \['extra.pkl'\]"):
        load_bundle(folder2)


def test_newer_engine_version_refused(tmp_path):
    ds = toy()
    model = fit_model(default_config("logreg"), ds.X, ds.y, 2)
    card = make_card(ds, model, evaluate_config(ds, default_config("logreg"), 3, n_boot=20), "toy", "1.0.0", False, "t")
    card["engine_version"] = "99.0.0"
    path = save_bundle(card, model, tmp_path / "new.zip")
    with pytest.raises(SpineAIError, match=f"made by SpineAI 99.0.0, newer than this engine \\({spineai.__version__}\\)"):
        load_bundle(path)


def test_no_partial_file_when_saving_fails(tmp_path, monkeypatch):
    ds = toy()
    model = fit_model(default_config("logreg"), ds.X, ds.y, 2)
    card = {"bad": float("nan")}  # JSON refuses NaN: the save fails after it started
    with pytest.raises(ValueError):
        save_bundle(card, model, tmp_path / "x.zip")
    assert list(tmp_path.iterdir()) == []


def test_ood_flags_a_shifted_table(tmp_path):
    ds = toy(80)
    path, _ = bundle_for(ds, default_config("logreg"), tmp_path)
    b = load_bundle(path)
    inside = b.predict(Table(ds.feature_names, [[repr(float(v)) for v in r] for r in ds.X]))
    assert np.mean([p.ood.in_distribution for p in inside]) >= 0.9
    shifted = ds.X * np.array([1.0, 3.0, 1.0, 0.4, 1.0, 1.0])  # another "scanner": two features rescaled
    out = b.predict(Table(ds.feature_names, [[repr(float(v)) for v in r] for r in shifted]))
    assert np.mean([not p.ood.in_distribution for p in out]) >= 0.9
    flagged = out[0]
    assert "f1" in flagged.ood.out_of_range or flagged.ood.distance > flagged.ood.threshold
    assert any("outside the training data" in w for w in flagged.warnings)


def test_definition_mismatch_and_missing_values_warn(tmp_path):
    from spineai.featureset import DEFINITION_PYRADIOMICS

    ds = toy()
    path, _ = bundle_for(ds, default_config("logreg"), tmp_path)
    b = load_bundle(path)
    feats = dict(zip(ds.feature_names, ds.X[0]))
    p = b.predict(feats, feature_definition=DEFINITION_PYRADIOMICS)
    assert any("feature definitions do not match" in w for w in p.warnings)
    feats["f2"] = float("nan")
    with pytest.raises(SpineAIError, match="columns f2"):
        b.predict(feats)
    p = b.predict(feats, impute=True)
    assert any("training medians" in w for w in p.warnings)
