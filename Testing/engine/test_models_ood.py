"""The out-of-distribution check as a calibrated procedure, on the study's 80 lesions and on real
SpineAI features of vertebral bodies renamed to the LIFEx columns."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from spineai.featureset import FEATURES_31, LIFEX_31
from spineai.models.ood import ALPHA, check_ood, fit_ood


@pytest.fixture(scope="module")
def lesions():
    from shared_data import shared_data_path
    from spineai.models.training import load_dataset

    return load_dataset(shared_data_path("sdmet31", "train.csv"), "diagnosis", exclude=["label"])


@pytest.fixture(scope="module")
def reference_bundle(lesions, tmp_path_factory):
    from spineai.models.bundle import load_bundle, save_bundle
    from spineai.models.estimators import default_config, fit_model
    from spineai.models.training import evaluate_config, make_card

    cfg = default_config("logreg")
    model = fit_model(cfg, lesions.X, lesions.y, 2)
    card = make_card(lesions, model, evaluate_config(lesions, cfg, 3, n_boot=20), "ref", "1.0.0", False, "t")
    return load_bundle(save_bundle(card, model, tmp_path_factory.mktemp("ood") / "ref.zip"))


def test_false_alarm_rate_by_cross_validation_is_near_nominal(lesions):
    """Each fold's lesions checked against a calibration fitted without them: about ALPHA flagged
    (the in-sample calibration with a range rule flagged 16 %)."""
    X, names = lesions.X, lesions.feature_names
    fold = np.arange(len(X)) % 8
    flagged = np.zeros(len(X), dtype=bool)
    for f in range(8):
        st = fit_ood(X[fold != f], names, measure=False)
        flagged[fold == f] = [not r.in_distribution for r in check_ood(st, X[fold == f])]
    assert flagged.mean() <= 2 * ALPHA
    card_rate = fit_ood(X, names)["false_alarm"]
    assert card_rate["n"] == 80 and card_rate["rate"] <= 2 * ALPHA and card_rate["alpha"] == ALPHA


def test_known_shifts_are_detected(lesions, reference_bundle):
    from spineai.models.tables import Table

    st = reference_bundle.card["ood"]
    assert np.mean([not r.in_distribution for r in check_ood(st, lesions.X * 1.5)]) >= 0.95
    # x1.1 barely moves a single case, but a whole table of them is flagged as a table
    rows = [[repr(float(v)) for v in r] for r in lesions.X * 1.1]
    preds = reference_bundle.predict(Table(lesions.feature_names, rows))
    assert all(not p.ood.in_distribution for p in preds)
    assert "the table as a whole does not fit" in preds[0].ood.message()
    untouched = reference_bundle.predict(Table(lesions.feature_names, [[repr(float(v)) for v in r] for r in lesions.X]))
    assert np.mean([p.ood.in_distribution for p in untouched]) >= 0.9


def _spineai_features(shared_data, tmp_path) -> list[dict[str, str]]:
    """`spineai features` on real vertebral bodies: cervical T2 MR C6 and C7 (TPTBox), CT L1/L2."""
    from spineai.cli import main
    from spineai.image import read_volume, write_volume

    d = shared_data("spine-samples")
    vert, sub = read_volume(d / "sub-mri_seg-vert_label-6_msk.nii.gz"), read_volume(d / "sub-mri_seg-subreg_label-6_msk.nii.gz")
    ct = read_volume(d / "example_seg.nii.gz")
    jobs = []
    for k in (6, 7):
        write_volume(vert.with_array(((vert.array == k) & (sub.array == 49)).astype(np.uint8)), tmp_path / f"c{k}.nii.gz")
        jobs.append((d / "sub-mri_label-6_T2w.nii.gz", tmp_path / f"c{k}.nii.gz"))
    for k in (30, 31):
        write_volume(ct.with_array((ct.array == k).astype(np.uint8)), tmp_path / f"ct{k}.nii.gz")
        jobs.append((d / "example_ct_sm.nii.gz", tmp_path / f"ct{k}.nii.gz"))
    rows = []
    for i, (img, mask) in enumerate(jobs):
        assert main(["features", str(img), str(mask), "--out", str(tmp_path / f"f{i}.csv")]) == 0
        rows += list(csv.DictReader(open(tmp_path / f"f{i}.csv")))
    return rows


def test_pyradiomics_features_renamed_to_lifex_are_flagged(shared_data, tmp_path, reference_bundle):
    from spineai.models.tables import Table

    rows = _spineai_features(shared_data, tmp_path)
    rename = dict(zip(FEATURES_31, LIFEX_31))
    # renamed, provenance columns dropped: only the values speak
    bare = Table(list(LIFEX_31), [[r[c] for c in FEATURES_31] for r in rows])
    preds = reference_bundle.predict(bare)
    assert all(not p.ood.in_distribution for p in preds)
    assert all(any("outside the training data" in w for w in p.warnings) for p in preds)
    # the MR bodies are flagged one by one too, not only as a table
    assert all(p.ood.p_value <= ALPHA for p in reference_bundle.predict(Table(list(LIFEX_31), bare.rows[:2])))
    # renamed with the provenance columns kept: the definition itself is named
    cols = [rename.get(c, c) for c in rows[0]]
    kept = Table(cols, [list(r.values()) for r in rows[:1]])
    p = reference_bundle.predict(kept)[0]
    assert not p.ood.in_distribution and "feature definitions do not match" in p.ood.message()


def test_bundled_reference_card_states_its_false_alarm_rate(lesions):
    from spineai.models import REFERENCE_MODEL_ID, load_bundle

    ood = load_bundle(REFERENCE_MODEL_ID).card["ood"]
    assert ood["false_alarm"] == fit_ood(lesions.X, lesions.feature_names)["false_alarm"]
    assert ood["false_alarm"]["n"] == 80 and ood["false_alarm"]["rate"] <= 2 * ALPHA
