"""Scoliosis screening: evaluation at a low prevalence, thresholds stored in the bundle, the training
product on a tiny run, classification with Grad-CAM and the Cobb angle, and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the radiograph classifier needs torch (not installed on this Python)")
pytest.importorskip("monai", reason="the radiograph classifier needs MONAI (not installed on this Python)")

from spineai.cli import main  # noqa: E402
from spineai.errors import SpineAIError  # noqa: E402
from spineai.imaging import radiograph_classifier as R  # noqa: E402
from spineai.imaging.radiograph_synth import generate_radiograph  # noqa: E402


# ---- evaluation -----------------------------------------------------------------------------------

def test_screening_metrics_match_scikit_learn_and_count_the_confusion():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = np.zeros(1000, int)
    y[:16] = 1  # 1.6 %
    score = np.clip(rng.normal(0.2, 0.15, 1000) + 0.45 * y, 0, 1)
    thresholds = R.choose_thresholds(score, y == 1)
    assert set(thresholds) == set(R.THRESHOLD_RULES)
    out = R.evaluate_screening(score, y, thresholds, n_boot=300)
    assert out["positives"] == 16 and out["prevalence"] == pytest.approx(0.016)
    assert out["auprc"]["value"] == pytest.approx(average_precision_score(y, score))
    assert out["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, score))
    assert out["auprc"]["ci_low"] < out["auprc"]["value"] < out["auprc"]["ci_high"]
    assert out["auprc"]["chance_level"] == pytest.approx(0.016)
    for rule, m in out["at_threshold"].items():
        (tn, fp), (fn, tp) = m["confusion"]
        assert tn + fp + fn + tp == 1000 and fn + tp == 16
        pred = score >= m["threshold"]
        assert tp == int((pred & (y == 1)).sum())
        assert m["recall"]["value"] == pytest.approx(tp / 16)
        assert m["precision"]["value"] == pytest.approx(tp / (tp + fp))
        assert m["recall"]["ci_low"] <= m["recall"]["value"] <= m["recall"]["ci_high"]
    assert out["at_threshold"]["recall"]["recall"]["value"] >= 0.9  # chosen on the same scores here
    assert len(out["pr_curve"]["threshold"]) <= 200


def test_a_threshold_rule_that_cannot_be_met_says_why():
    score = np.linspace(0, 1, 100)
    y = (np.arange(100) % 7 == 0).astype(int)  # positives spread evenly: precision never reaches 0.5
    chosen = R.choose_thresholds(score, y == 1, {"precision": 0.9, "youden": None})
    assert "error" in chosen["precision"] and "no threshold reaches precision 0.9" in chosen["precision"]["error"]
    assert "threshold" in chosen["youden"]
    assert R._finite_or_none({"a": [1.0, float("nan")], "b": {"c": float("inf")}}) == {"a": [1.0, None], "b": {"c": None}}
    with pytest.raises(SpineAIError, match="both positive and negative"):
        R.evaluate_screening(score, np.zeros(100, int), chosen)


def test_film_input_and_heatmap_round_trip():
    film = generate_radiograph(30, seed=2, size=200)
    x = R.film_input(film.image[:, :150], (64, 64))
    assert tuple(x.shape) == (1, 64, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    back = R.heatmap_to_film(np.ones((64, 64)), (200, 150))
    assert back.shape == (200, 150) and np.allclose(back, 1)


# ---- the training product on a tiny run ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("radiograph-run")
    result = R.train_radiograph_model(out, input_size=64, steps=3, batch=4, train_films=24, tuning_films=130,
                                      test_films=130, film_size=96, cobb_films=6, seed=1, threshold_rule="f1", device="cpu",
                                      command="pytest tiny run")
    return out, result


def test_tiny_run_writes_a_bundle_with_thresholds_and_honest_metrics(tiny_run):
    from spineai.deep.bundle import load_torch_bundle

    out, result = tiny_run
    assert result["stopped"] in ("finished", "early-stopped")
    bundle = load_torch_bundle(result["bundle"], task=R.TASK)
    card = bundle.card
    assert card["demonstration"] is True and bundle.is_demonstration
    assert card["threshold"]["rule"] == "f1" and 0 <= card["threshold"]["threshold"] <= 1
    assert set(card["thresholds"]) == set(R.THRESHOLD_RULES)
    assert card["training"]["seed"] == 1 and card["training"]["command"] == "pytest tiny run"
    assert card["training"]["balance"] == "sampling" and "git_commit" in card["training"]
    test = card["metrics"]["test"]
    assert test["n"] == 130 and test["positives"] == 2  # the study's 1.6 %
    for key in ("auprc", "roc_auc"):
        assert {"value", "ci_low", "ci_high"} <= set(test[key])
    assert "f1" in test["at_threshold"] and "confusion" in test["at_threshold"]["f1"]
    cam = card["metrics"]["gradcam_on_spine"]["scoliosis films"]
    assert cam["films"] == 2 and 0 < cam["spine_share_of_film"] < 0.2 and cam["target_layer"] == card["cam_layer"]
    assert card["metrics"]["cobb"]["films"] == 6 and card["metrics"]["cobb"]["mae_deg"] < 10
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 130


def test_two_round_schedule_from_local_weights_and_class_weights(tiny_run, tmp_path):
    from spineai.imaging.classifier import build_classifier, network_spec

    _, first = tiny_run
    weights = f"{first['bundle']}/weights.safetensors"  # a local file: nothing is ever downloaded
    result = R.train_radiograph_model(tmp_path, input_size=64, steps=2, batch=4, freeze_steps=2, balance="weights",
                                      init_weights=weights, train_films=16, tuning_films=130, test_films=130,
                                      film_size=96, cobb_films=2, seed=2, device="cpu")
    training = result["card"]["training"]
    assert training["freeze_steps"] == 2 and "head only" in training["schedule"]
    assert training["initial_weights"]["file"] == "weights.safetensors"
    assert training["initial_weights"]["tensors_loaded"] == training["initial_weights"]["tensors_in_network"]
    assert training["balance"] == "weights" and training["class_weights"][1] > training["class_weights"][0]
    assert (tmp_path / "training" / "stage-head").is_dir() and (tmp_path / "training" / "stage-all").is_dir()
    assert build_classifier(network_spec("densenet121", 2, 1, 2, [64, 64])) is not None


def test_bad_training_requests_are_refused(tmp_path):
    with pytest.raises(SpineAIError, match="radiograph backbones"):
        R.train_radiograph_model(tmp_path, backbone="resnet34")
    with pytest.raises(SpineAIError, match="unknown threshold rule"):
        R.train_radiograph_model(tmp_path, threshold_rule="accuracy")
    with pytest.raises(SpineAIError, match="training prevalence"):
        R.train_radiograph_model(tmp_path, train_prevalence=1.5)


# ---- one film ------------------------------------------------------------------------------------

def test_classify_a_film_with_gradcam_cobb_and_the_stored_threshold(tiny_run):
    from spineai.deep.bundle import load_torch_bundle

    _, result = tiny_run
    bundle = load_torch_bundle(result["bundle"])
    film = generate_radiograph(35, seed=9, size=160)
    res = R.classify_radiograph(bundle, film.volume())
    assert 0 <= res.probability <= 1
    assert res.threshold == pytest.approx(bundle.card["threshold"]["threshold"]) and res.threshold_rule == "f1"
    assert res.decision == (res.probability >= res.threshold)
    assert res.heatmap.shape == (160, 160) and 0 <= res.heatmap.min() and res.heatmap.max() <= 1
    assert res.heatmap_volume.same_geometry(film.volume())
    assert abs(res.cobb.angle_deg - 35) < 8
    assert res.summary()["notice"] == R.DEMONSTRATION_NOTICE
    given = R.classify_radiograph(bundle, film.volume(), threshold=0.0)
    assert given.decision and given.threshold_rule == "given"
    with pytest.raises(SpineAIError, match="between 0 and 1"):
        R.classify_radiograph(bundle, film.volume(), threshold=3)


def test_classify_radiograph_command_writes_overlay_and_notice(tiny_run, tmp_path, capsys):
    _, result = tiny_run
    film = tmp_path / "film.png"
    assert main(["generate-radiograph", "--cobb", "25", "--seed", "4", "--out", str(film)]) == 0
    assert "Cobb angle 25.0 deg (scoliosis)" in capsys.readouterr().out
    out = tmp_path / "result"
    assert main(["classify-radiograph", str(film), "--model", result["bundle"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert R.DEMONSTRATION_NOTICE in printed and "P(scoliosis) = " in printed and "Cobb angle: " in printed
    summary = json.loads((out / "result.json").read_text())
    assert summary["demonstration"] is True and summary["threshold_rule"] == "f1"
    assert 15 < summary["cobb_angle_deg"] < 35
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "gradcam.nii.gz").exists()
    # nothing is overwritten without --overwrite
    code = main(["classify-radiograph", str(film), "--model", result["bundle"], "--out", str(out)])
    assert code == 2 and "already exists" in capsys.readouterr().err


def test_classify_radiograph_command_refuses_bad_inputs(tiny_run, tmp_path, capsys):
    _, result = tiny_run
    (tmp_path / "notes.txt").write_text("no film")
    code = main(["classify-radiograph", str(tmp_path / "notes.txt"), "--model", result["bundle"],
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "not a DICOM, picture, NIfTI" in capsys.readouterr().err
    film = tmp_path / "f.nii.gz"
    assert main(["generate-radiograph", "--cobb", "5", "--out", str(film)]) == 0
    code = main(["classify-radiograph", str(film), "--model", "spineai-body-click", "--out", str(tmp_path / "o")])
    assert code == 2 and "not a 'scoliosis-radiograph' model" in capsys.readouterr().err
