"""spineai.imaging.classifier: networks by name, crops, training, evaluation, heatmap geometry."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="image classifiers need torch (not installed on this Python)")
pytest.importorskip("monai", reason="image classifiers need MONAI (not installed on this Python)")

from spineai.errors import SpineAIError  # noqa: E402
from spineai.image import Volume  # noqa: E402
from spineai.imaging import classifier as C  # noqa: E402


@pytest.mark.parametrize("backbone", C.BACKBONES)
def test_every_backbone_builds_in_2d_with_its_head_and_never_downloads(backbone):
    spec = C.network_spec(backbone, 2, 3, 3, (64, 64))
    net = C.build_classifier(spec)
    assert spec.get("args", {}).get("pretrained", False) is False
    assert any(n.startswith(spec["head"] + ".") for n, _ in net.named_parameters())
    with torch.no_grad():
        out = net.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)
    # Grad-CAM on the default layer (EfficientNet reuses one swish module: the map must still fit)
    from spineai.deep.cam import explain

    result = explain(net, torch.randn(1, 3, 64, 64))
    assert result.heatmap.shape == (1, 64, 64) and np.isfinite(result.heatmap).all()


def test_3d_backbone_and_bad_names():
    net = C.build_classifier(C.network_spec("resnet-small", 3, 1, 2, (32, 32, 32)))
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2)
    with pytest.raises(SpineAIError, match="unknown backbone 'alexnet'"):
        C.network_spec("alexnet", 2, 1, 2, (64, 64))
    with pytest.raises(SpineAIError, match="at least 2 classes"):
        C.network_spec("resnet34", 2, 1, 1, (64, 64))
    with pytest.raises(SpineAIError, match="divisible"):
        C.network_spec("vit", 2, 1, 2, (60, 60))


def test_initial_weights_from_a_local_file_keep_the_new_head(tmp_path):
    from safetensors.torch import save_file

    donor = C.build_classifier(C.network_spec("resnet-small", 2, 3, 5, (64, 64)))
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "w.safetensors"))
    net = C.build_classifier(C.network_spec("resnet-small", 2, 3, 3, (64, 64)))
    info = C.load_initial_weights(net, tmp_path / "w.safetensors")
    assert torch.equal(net.conv1.weight, donor.conv1.weight)
    assert info["tensors_loaded"] == info["tensors_in_network"] - 2  # fc weight and bias differ in shape
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(SpineAIError, match="unreadable"):
        C.load_initial_weights(net, tmp_path / "bad.safetensors")
    with pytest.raises(SpineAIError, match="does not exist"):
        C.load_initial_weights(net, tmp_path / "missing.pt")


def test_split_by_group_keeps_groups_apart_and_every_class_in_every_part():
    groups = [f"p{i // 2}" for i in range(60)]
    y = [(i // 2) % 3 for i in range(60)]
    tr, va, te = C.split_by_group(groups, y, (0.6, 0.2, 0.2), seed=1)
    g = np.asarray(groups)
    assert not set(g[tr]) & set(g[va]) and not set(g[tr]) & set(g[te]) and not set(g[va]) & set(g[te])
    assert len(tr) + len(va) + len(te) == 60
    for part in (tr, va, te):
        assert set(np.asarray(y)[part]) == {0, 1, 2}
    with pytest.raises(SpineAIError, match="too few groups"):
        C.split_by_group(["a", "b", "c"], [0, 1, 1], (0.5, 0.5), seed=0)


def _blob_images(n, rng, size=32):
    """Class 1: a bright disc somewhere; class 0: none. Noise on both."""
    yy, xx = np.mgrid[:size, :size]
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        cy, cx = rng.integers(8, size - 8, 2)
        x[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] += 1.0
    return torch.from_numpy(x), y


def test_training_learns_a_visible_difference_and_evaluation_reports_cis(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _blob_images(96, rng)
    vx, vy = _blob_images(32, rng)
    tx, ty = _blob_images(40, rng)
    spec = C.network_spec("resnet-small", 2, 1, 2, (32, 32))
    trained = C.train_classifier(spec, x, y, vx, vy, tmp_path / "run", steps=80, batch=16, lr=3e-3, val_every=40,
                                 freeze_steps=10, augment=None, device="cpu")
    assert [r["stage"] for r in trained.summary["history"]][0] == "head"
    p = C.predict_probabilities(trained.network, tx)
    report = C.evaluate(p, ty, ["none", "blob"], n_boot=200, thresholds_from=(C.predict_probabilities(trained.network, vx), vy))
    assert report["metrics"]["accuracy"]["value"] >= 0.9
    assert report["metrics"]["auc"]["ci_low"] <= report["metrics"]["auc"]["value"] <= report["metrics"]["auc"]["ci_high"]
    assert np.asarray(report["confusion"]).sum() == 40
    assert "youden" in report["thresholds"]["blob"]
    assert (tmp_path / "run" / "stage-all" / "training_log.csv").exists()


def test_class_weights_and_bad_balance():
    np.testing.assert_allclose(C.class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 2.0])
    with pytest.raises(SpineAIError, match="no example of class"):
        C.class_weights(np.array([0, 0]), 2)
    with pytest.raises(SpineAIError, match="unknown balance"):
        C.train_classifier(C.network_spec("resnet-small", 2, 1, 2, (32, 32)), torch.zeros(2, 1, 32, 32), [0, 1],
                           torch.zeros(2, 1, 32, 32), [0, 1], "unused", balance="oversample")


def _rotated_anisotropic_volume():
    """A volume tilted 25 deg about two axes with 0.7 x 0.9 x 3 mm voxels, a bright ball at a known point."""
    a, b = np.deg2rad(25), np.deg2rad(-15)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    vol = Volume(np.zeros((30, 90, 100), np.float32), (0.7, 0.9, 3.0), (-20.0, 15.0, 40.0), rz @ rx)
    ball_lps = vol.ijk_to_lps_matrix()[:3, :3] @ np.array([47.0, 50.0, 14.0]) + np.array(vol.origin)
    m = vol.ijk_to_lps_matrix()
    k, j, i = np.meshgrid(*(np.arange(s) for s in vol.array.shape), indexing="ij")
    pts = np.stack([i, j, k], -1) @ m[:3, :3].T + m[:3, 3]
    arr = 100.0 + 900.0 * (np.linalg.norm(pts - ball_lps, axis=-1) <= 5.0)
    return vol.with_array(arr.astype(np.float32)), ball_lps


class BallDetector(torch.nn.Module):
    """Class 1 = something bright: its evidence is exactly the bright voxels."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0] = 1.0 / 27
            self.features.bias.fill_(-0.5)
            self.head.weight.zero_()
            self.head.weight[1, 0] = 10.0
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.amax(self.act(self.features(x)), dim=(2, 3, 4)))


def test_a_known_blobs_heatmap_lands_on_its_ras_point_in_a_rotated_anisotropic_volume():
    vol, ball_lps = _rotated_anisotropic_volume()
    recipe = {"kind": "volume", "shape": [32, 32, 32], "spacing_mm": 1.5}
    bundle = SimpleNamespace(card={"classes": ["none", "bright"], "preprocessing": recipe}, network=BallDetector().eval())
    off_centre = ball_lps + np.array([6.0, -8.0, 5.0])  # the ball is not at the crop's centre
    result = C.explain_crop(bundle, vol, off_centre, target_layer="act")
    assert result.predicted == "bright"
    heat = result.heatmap
    assert heat.same_geometry(vol) and heat.array.max() <= 1.0
    k, j, i = np.unravel_index(int(np.argmax(heat.array)), heat.array.shape)
    peak_ras = vol.ijk_to_ras((i, j, k))
    ball_ras = np.array([-ball_lps[0], -ball_lps[1], ball_lps[2]])
    assert np.linalg.norm(peak_ras - ball_ras) <= 5.0  # the peak lies in the ball (radius 5 mm)
    # the mass-weighted centre too, not just the peak
    m = vol.ijk_to_ras_matrix()
    kk, jj, ii = np.nonzero(heat.array > 0.5)
    centre = (np.stack([ii, jj, kk, np.ones_like(ii)], -1) @ m.T)[:, :3].mean(0)
    assert np.linalg.norm(centre - ball_ras) <= 2.0


def test_2d_sagittal_slices_heatmap_covers_the_slab_of_its_slices():
    vol = Volume(np.zeros((40, 60, 60), np.float32), (1.0, 1.0, 1.0))
    recipe = {"kind": "sagittal-slices", "shape": [32, 32], "spacing_mm": 1.0, "slices": 3, "slice_spacing_mm": 4.0}
    x, grid = C.sample_crop(vol.with_array(np.random.default_rng(0).random((40, 60, 60)).astype(np.float32)), recipe,
                            (30.0, 30.0, 20.0))
    assert tuple(x.shape) == (3, 32, 32)
    heat = C.heatmap_to_volume(np.ones((32, 32), np.float32), grid, vol)
    covered_i = np.flatnonzero(heat.array.max(axis=(0, 1)) > 0)
    assert covered_i.min() == 26 and covered_i.max() == 34  # 3 slices 4 mm apart around x = 30
    with pytest.raises(SpineAIError, match="does not fit the crop"):
        C.heatmap_to_volume(np.ones((16, 16), np.float32), grid, vol)
    with pytest.raises(SpineAIError, match="entirely outside"):
        C.sample_crop(vol, recipe, (500.0, 0.0, 0.0))
    with pytest.raises(SpineAIError, match="unknown crop kind"):
        C.check_recipe({"kind": "axial", "shape": [32, 32], "spacing_mm": 1})


def test_heatmap_localisation_ratio():
    heat = np.zeros((10, 10))
    heat[:2, :2] = 1.0
    region = np.zeros((10, 10), bool)
    region[:5, :5] = True
    r = C.heatmap_localisation(heat, region)
    assert r["mass_inside"] == 1.0 and r["area_share"] == 0.25 and r["ratio"] == 4.0
    assert r["peak_inside"] is True
    heat[8, 8] = 2.0  # the peak outside the region
    assert C.heatmap_localisation(heat, region)["peak_inside"] is False
    assert C.heatmap_localisation(np.zeros((10, 10)), region)["peak_inside"] is False  # a flat map points nowhere


def test_cam_layer_candidates_never_name_a_module_that_runs_twice():
    # A bottleneck ResNet reuses one activation inside each block (ResNet101 once offered
    # layer3.0.act); EfficientNet reuses one swish everywhere.
    from collections import Counter

    from spineai.deep.cam import spatial_layers

    for backbone in ("resnet101", "efficientnet-b0"):
        net = C.build_classifier(C.network_spec(backbone, 2, 3, 3, [64, 64]))
        calls = Counter(name for name, _ in spatial_layers(net, (1, 3, 64, 64)))
        candidates = C.cam_layer_candidates(net, (1, 3, 64, 64))
        assert len(candidates) == 3 and all(calls[c] == 1 for c in candidates), candidates
        assert candidates[-1] in ("layer4", "_bn1")  # the deepest stage that is still a map
