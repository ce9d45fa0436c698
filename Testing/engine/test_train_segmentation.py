"""`spineai train-segmentation` end to end on a tiny generated data set: train, pause, resume,
validate through the user's path, bundle with its card, ship into a registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spineai.image import Volume, read_volume, write_volume

pytest.importorskip("torch", reason="training needs torch (pip install 'spineai[deep]')")
pytest.importorskip("monai", reason="training needs MONAI (pip install 'spineai[deep]')")
pytestmark = pytest.mark.filterwarnings("ignore")


def _tiny_spine(folder, name, seed):
    """Three box-shaped 'bodies' stacked along S-I with darker 'discs' between, 1 mm voxels."""
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 5, size=(110, 60, 70)).astype(np.float32)  # k (S-I), j (A-P), i (L-R)
    lab = np.zeros(img.shape, np.uint8)
    for n, k0 in enumerate((8, 42, 76)):
        lab[k0:k0 + 26, 15:45, 15:55] = n + 1
        img[k0:k0 + 26, 15:45, 15:55] += 80
    direction = np.array([[1, 0, 0], [0, 1, 0], [0, 0, -1.0]])
    write_volume(Volume(img, (1, 1, 1), (0, 0, 0), direction), folder / f"{name}_img.nii.gz")
    write_volume(Volume(lab, (1, 1, 1), (0, 0, 0), direction), folder / f"{name}_bodies.nii.gz")


def test_train_pause_resume_bundle_and_ship(tmp_path, monkeypatch):
    from spineai.segment import body_training
    from spineai.segment.deep import ClickSegmenter

    # A small network and patch: this tests the command's workings, not the shipped model's accuracy.
    monkeypatch.setattr(body_training, "NETWORK", {"class": "monai.networks.nets.UNet", "args": {
        "spatial_dims": 3, "in_channels": 3, "out_channels": 1, "channels": [4, 8], "strides": [2], "num_res_units": 0}})
    monkeypatch.setattr(body_training, "PATCH_SHAPE", (24, 32, 40))
    data = tmp_path / "data"
    data.mkdir()
    for n, name in enumerate(("AA_1", "AA_2", "BB_1", "BB_2")):
        _tiny_spine(data, name, n)
    split = {"AA": 1, "BB": 1}
    kwargs = dict(steps=4, batch=2, val_every=2, patience=5, device="cpu", val_per_source=split, workers=2)
    paused = body_training.train_and_bundle(data, tmp_path / "run", max_minutes=0.0, **kwargs)
    assert paused["stopped"] == "paused" and paused["steps"] == 1
    assert not (tmp_path / "run" / "model").exists()
    done = body_training.train_and_bundle(data, tmp_path / "run", command="spineai train-segmentation ...", **kwargs)
    assert done["stopped"] == "finished" and done["steps"] == 4
    card = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert card["task"] == "click-segmentation" and card["network"]["class"] == "monai.networks.nets.UNet"
    assert len(card["training"]["validation_cases"]) == 2
    assert set(card["training"]["train_cases"]).isdisjoint(card["training"]["validation_cases"])
    assert card["training"]["command"] == "spineai train-segmentation ..." and card["training"]["git_commit"]
    v = card["metrics"]["validation"]
    assert v["cases"] == 2 and v["bodies"] == 6 and v["deep_centre"]["clicks"] == 6
    assert 0 <= v["deep_centre"]["mean_dice"] <= 1 and "classic_centre" in v
    assert card["preprocessing"]["threshold"] in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    rows = (tmp_path / "run" / "validation_clicks.csv").read_text().splitlines()
    assert rows[0].startswith("case,body,click") and len(rows) == 1 + 6 * 4
    assert sorted(p.name for p in (tmp_path / "run" / "overlays").iterdir()) == [
        f"{n}.png" for n in sorted(card["training"]["validation_cases"])]
    assert (tmp_path / "run" / "training_curves.png").exists()
    assert "2 data worker(s)" in card["training"]["device"]
    # What a training machine sends back (state + best weights) finishes the same way elsewhere.
    ckpt = tmp_path / "run" / "checkpoint"
    for name in ("model.safetensors", "optimizer.safetensors"):
        (ckpt / name).unlink()
    again = body_training.train_and_bundle(data, tmp_path / "run", **kwargs)
    timing = "deep_seconds_median"
    assert again["stopped"] == "finished" and {k: v for k, v in again["metrics"]["validation"].items() if k != timing} \
        == {k: v for k, v in card["metrics"]["validation"].items() if k != timing}
    # The bundle is what users load: the same network from the card, the same geometry out.
    seg = ClickSegmenter(str(tmp_path / "run" / "model"), "cpu")
    image = read_volume(data / "AA_1_img.nii.gz")
    values, box, seconds = seg.probability(image, (35, 30, 20))
    assert values.shape == image.array[box].shape and set(seconds) == {"resample", "network", "back-project"}
    # --ship: into a registry (here a temporary one), pinned by sha256.
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"schema": 1, "models": []}))
    entry = body_training.ship_bundle(tmp_path / "run" / "model", models_dir=tmp_path, registry=registry)
    listed = json.loads(registry.read_text())["models"]
    assert listed == [entry] and entry["task"] == "click-segmentation"
    from spineai.deep.bundle import load_torch_bundle

    assert load_torch_bundle(entry["id"], registry=registry).verified
