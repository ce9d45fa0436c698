"""Lesion image classification (spineai.imaging.lesion), generated lesions, and classify-image."""

import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the image classifier needs torch (not installed on this Python)")
pytest.importorskip("monai", reason="the image classifier needs MONAI (not installed on this Python)")

from spineai.cli import main  # noqa: E402
from spineai.errors import SpineAIError  # noqa: E402
from spineai.image import Volume, read_volume, write_volume  # noqa: E402
from spineai.imaging import lesion as L  # noqa: E402
from spineai.imaging.classifier import build_classifier, network_spec  # noqa: E402

RECIPE = {"kind": "sagittal-slices", "shape": [32, 32], "spacing_mm": 3.0, "slices": 3, "slice_spacing_mm": 5.0}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """An untrained lesion image bundle (the engine's path, not the shipped weights)."""
    from spineai.deep.bundle import save_torch_bundle

    torch.manual_seed(0)
    spec = network_spec("resnet-small", 2, 3, 3, RECIPE["shape"])
    card = {"id": "tiny-lesion", "version": "0.0.1", "task": L.TASK, "classes": ["SD", "MET", "STB"],
            "demonstration": True, "network": spec, "preprocessing": RECIPE}
    return save_torch_bundle(card, build_classifier(spec), tmp_path_factory.mktemp("b") / "tiny.zip")


def test_mask_and_click_give_probabilities_and_a_heatmap_on_the_images_geometry(phantom, tiny_bundle):
    by_mask = L.classify_lesion(phantom.image, mask=phantom.lesion_mask, model=str(tiny_bundle), device="cpu")
    assert set(by_mask.probabilities) == {"SD", "MET", "STB"}
    assert sum(by_mask.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert by_mask.heatmap.same_geometry(phantom.image)
    assert 0.0 <= by_mask.heatmap.array.min() and by_mask.heatmap.array.max() <= 1.0
    assert by_mask.demonstration and "DEMONSTRATION" in by_mask.notice
    # the heatmap lies around the lesion: the crop is centred on the mask's centroid
    covered = np.argwhere(by_mask.heatmap.array > 0)
    centroid = np.argwhere(phantom.lesion_mask.array > 0).mean(0)
    assert np.all(covered.min(0) <= centroid) and np.all(centroid <= covered.max(0))
    by_click = L.classify_lesion(phantom.image, seed=phantom.lesion_center_ras, model=str(tiny_bundle), device="cpu",
                                 method="gradcam++")
    np.testing.assert_allclose(by_click.centre_ras, phantom.lesion_center_ras, atol=1e-6)
    assert by_click.method == "gradcam++"


def test_bad_inputs_are_named(phantom, tiny_bundle, tmp_path):
    img = phantom.image
    with pytest.raises(SpineAIError, match="lies outside the image"):
        L.classify_lesion(img, seed=(900.0, 0.0, 0.0), model=str(tiny_bundle))
    with pytest.raises(SpineAIError, match="lesion mask is empty"):
        L.classify_lesion(img, mask=img.with_array(np.zeros(img.array.shape, np.uint8)), model=str(tiny_bundle))
    shifted = Volume(phantom.lesion_mask.array, img.spacing, tuple(o + 5 for o in img.origin), img.direction)
    with pytest.raises(SpineAIError, match="does not have the image's geometry"):
        L.classify_lesion(img, mask=shifted, model=str(tiny_bundle))
    with pytest.raises(SpineAIError, match="either as a mask or as a seed"):
        L.classify_lesion(img, model=str(tiny_bundle))
    with pytest.raises(SpineAIError, match="is a 'click-segmentation' model, not a 'lesion-image-classification'"):
        L.load_image_model("spineai-body-click")
    # tampered weights: the manifest catches it
    with zipfile.ZipFile(tiny_bundle) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["weights.safetensors"] = files["weights.safetensors"][:-8] + b"\0" * 8
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    with pytest.raises(SpineAIError, match="sha256 mismatch"):
        L.load_image_model(str(tmp_path / "t.zip"))


def test_classify_image_command_writes_probabilities_heatmap_and_overlay(phantom, tiny_bundle, tmp_path, capsys):
    image = write_volume(phantom.image, tmp_path / "t2.nii.gz")
    mask = write_volume(phantom.lesion_mask, tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    assert main(["classify-image", str(tiny_bundle), str(image), "--mask", str(mask), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "DEMONSTRATION MODEL" in printed
    result = json.loads((out / "probabilities.json").read_text())
    assert result["demonstration"] and set(result["probabilities"]) == {"SD", "MET", "STB"}
    heat = read_volume(out / "heatmap.nii.gz")
    assert heat.same_geometry(read_volume(image)) and heat.array.max() > 0
    assert (out / "heatmap_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing is overwritten without --overwrite
    seed = "--seed=" + ",".join(f"{v:.2f}" for v in phantom.lesion_center_ras)
    assert main(["classify-image", str(tiny_bundle), str(image), seed, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["classify-image", str(tiny_bundle), str(image), "--seed=900,0,0", "--out", str(tmp_path / "o2")]) == 2
    assert "outside the image" in capsys.readouterr().err


# ---- generated lesions on real anatomy -------------------------------------------------------------

@pytest.fixture(scope="module")
def real_case():
    from shared_data import shared_data_path

    folder = shared_data_path("spine-mr-bodies")
    return read_volume(folder / "VB3_01_img.nii.gz"), read_volume(folder / "VB3_01_bodies.nii.gz")


def test_generated_lesions_follow_each_class_pattern(real_case):
    from spineai.imaging.lesion_data import generate_lesion

    image, labels = real_case
    rng = np.random.default_rng(3)
    lab = labels.array
    for _ in range(2):
        sd = generate_lesion(image, labels, "SD", rng)
        m = sd.mask.array > 0
        assert len(sd.bodies) == 2 and all((m & (lab == b)).sum() > 200 for b in sd.bodies)  # both bodies
        assert (m & (lab == 0)).sum() > 500  # the disc between them
        met = generate_lesion(image, labels, "MET", rng)
        m = met.mask.array > 0
        assert len(met.bodies) == 1 and (m & (lab == met.bodies[0])).sum() >= 0.5 * m.sum()
        assert not (m & (lab > 0) & (lab != met.bodies[0])).any()  # one body, nothing in the others
        stb = generate_lesion(image, labels, "STB", rng)
        m = stb.mask.array > 0
        assert len(stb.bodies) in (2, 3) and all((m & (lab == b)).any() for b in stb.bodies)
        assert (m & (lab == 0)).sum() > 3000  # abscess and subligamentous spread, outside the bone
        delta = np.abs(stb.image.array - image.array.astype(np.float32))
        assert delta[m].sum() >= 0.8 * delta.sum()  # the mask holds the change (faint oedema fades out of it)
    with pytest.raises(SpineAIError, match="unknown lesion kind"):
        generate_lesion(image, labels, "TB", rng)


def test_demo_split_is_by_case_with_every_source_in_every_part():
    from spineai.imaging.lesion_training import split_demo_cases

    names = [f"VB2_{i:02d}" for i in range(13)] + [f"VB3_{i:02d}" for i in range(50)]
    parts = split_demo_cases(names, seed=0)
    assert sum(len(p) for p in parts) == 63 and len(set().union(*map(set, parts))) == 63
    for p in parts:
        assert any(n.startswith("VB2") for n in p) and any(n.startswith("VB3") for n in p)


# ---- the shipped demonstration model ----------------------------------------------------------------

def test_shipped_demonstration_model_card_registry_and_a_lesion_of_each_class():
    from spineai.bundlefile import read_bundle
    from spineai.imaging.lesion_data import CLASSES, generate_lesion
    from spineai.models.registry import bundled_entries
    from shared_data import shared_data_path

    entry = next(e for e in bundled_entries() if e["id"] == L.DEFAULT_MODEL)
    assert entry["task"] == L.TASK and entry["demonstration"] and "DEMONSTRATION" in entry["description"]
    _, _, _, verified = read_bundle(L.DEFAULT_MODEL)
    bundle = L.load_image_model(device="cpu")
    card = bundle.card
    assert verified and card["demonstration"] and bundle.is_demonstration
    assert card["classes"] == list(CLASSES) and "cannot teach" in card["what_generated_lesions_teach"]
    for key in ("seed", "command", "duration_minutes", "git_commit", "hardware", "cases"):
        assert key in card["training"]
    acc = card["metrics"]["test"]["metrics"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["value"] >= 0.8
    for name, loc in card["metrics"]["gradcam_localisation_test"]["gradcam"].items():
        assert loc["mass_inside"] > loc["area_share"], name  # the heatmap favours the lesion
    # lesions generated in a case the model never saw
    folder = shared_data_path("spine-mr-bodies")
    case = card["training"]["cases"]["test"][0]
    image, labels = read_volume(folder / f"{case}_img.nii.gz"), read_volume(folder / f"{case}_bodies.nii.gz")
    rng = np.random.default_rng(11)
    right = 0
    for kind in CLASSES:
        g = generate_lesion(image, labels, kind, rng)
        result = L.classify_lesion(g.image, mask=g.mask, device="cpu")
        right += result.predicted == kind
        assert result.heatmap.same_geometry(image) and result.demonstration
    assert right >= 2


def test_training_from_a_manifest_splits_by_patient_and_writes_a_usable_bundle(tmp_path, capsys):
    """Researchers' own data: bright vs dark lesions in small volumes, masks or clicks, one per patient."""
    import csv

    rng = np.random.default_rng(0)
    rows = []
    for n in range(14):
        label = "bright" if n % 2 else "dark"
        arr = rng.normal(100, 5, (40, 40, 40)).astype(np.float32)
        mask = np.zeros(arr.shape, np.uint8)
        c = rng.integers(14, 26, 3)
        kk, jj, ii = np.ogrid[:40, :40, :40]
        ball = (kk - c[0]) ** 2 + (jj - c[1]) ** 2 + (ii - c[2]) ** 2 <= 25
        arr[ball] = 200 if label == "bright" else 20
        mask[ball] = 1
        vol = Volume(arr, (1.5, 1.5, 1.5))
        write_volume(vol, tmp_path / f"p{n}.nii.gz")
        row = {"image": f"p{n}.nii.gz", "label": label, "patient": f"patient{n}", "mask": "", "seed": ""}
        if n % 3:
            write_volume(vol.with_array(mask), tmp_path / f"p{n}_mask.nii.gz")
            row["mask"] = f"p{n}_mask.nii.gz"
        else:
            row["seed"] = ",".join(f"{v:.2f}" for v in vol.ijk_to_ras(c[::-1]))
        rows.append(row)
    with open(tmp_path / "lesions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "run"
    assert main(["train-image-classifier", "--manifest", str(tmp_path / "lesions.csv"), "--out", str(out),
                 "--steps", "4", "--batch", "4", "--model-id", "bright-dark", "--freeze-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "DEMONSTRATION" not in printed and "bundle ->" in printed
    bundle = L.load_image_model(str(out / "model"), device="cpu")
    card = bundle.card
    assert card["classes"] == ["bright", "dark"] and not card["demonstration"] and card["id"] == "bright-dark"
    parts = card["training"]["cases"]
    assert sum(len(v) for v in parts.values()) == 14 and len(set().union(*map(set, parts.values()))) == 14
    assert "not_measured" in card["metrics"]["gradcam_localisation_test"]  # some lesions are clicks
    assert card["training"]["frozen_backbone_steps"] == 2
    assert card["training"]["frozen_backbone_steps"] == 2
    result = L.classify_lesion(read_volume(tmp_path / "p1.nii.gz"), mask=read_volume(tmp_path / "p1_mask.nii.gz"),
                               model=str(out / "model"), device="cpu")
    assert set(result.probabilities) == {"bright", "dark"} and not result.demonstration and result.notice == ""
    (tmp_path / "bad.csv").write_text("image,label\nx.nii.gz,a\n")
    assert main(["train-image-classifier", "--manifest", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r2")]) == 2
    assert "missing: patient" in capsys.readouterr().err
