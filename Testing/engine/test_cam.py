"""Grad-CAM / Grad-CAM++ (spineai.deep.cam): maps in [0, 1] that point at the evidence."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Grad-CAM needs torch (not installed on this Python)")
pytest.importorskip("monai", reason="Grad-CAM needs MONAI (not installed on this Python)")

from spineai.deep.cam import default_target_layer, explain  # noqa: E402
from spineai.errors import SpineAIError  # noqa: E402


class BlobDetector(torch.nn.Module):
    """Class 1 = a bright blob: one 3x3 'bright' filter, pooled. Its evidence is exactly the blob."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveMaxPool2d(1)
        self.head = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0] = 1.0 / 9
            self.features.bias.fill_(-0.5)
            self.head.weight.zero_()
            self.head.weight[1, 0] = 10.0
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.pool(self.act(self.features(x))).flatten(1))


def blob_image(centre=(20, 40), size=64):
    yy, xx = np.mgrid[:size, :size]
    img = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= 16).astype(np.float32)
    return torch.from_numpy(img)[None, None]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_points_at_the_blob_and_probabilities_come_from_the_same_pass(method):
    net = BlobDetector()
    x = blob_image()
    with torch.no_grad():  # callers often explain under no_grad: the map must not come back empty
        result = explain(net, x, method=method, target_layer="act")
        expected = torch.softmax(net(x), 1).numpy()
    assert result.heatmap.shape == (1, 64, 64)
    assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1.0)
    peak = np.unravel_index(result.heatmap[0].argmax(), (64, 64))
    assert abs(peak[0] - 20) <= 2 and abs(peak[1] - 40) <= 2
    blob = blob_image()[0, 0].numpy() > 0
    assert result.heatmap[0][blob].sum() / result.heatmap[0].sum() > 0.5  # the blob is 1 % of the image
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5)
    assert result.class_index == [1]


def test_flat_map_is_zero_not_nan_and_network_state_is_kept():
    net = BlobDetector()
    net.train()
    result = explain(net, torch.zeros(2, 1, 32, 32), target_layer="act")
    assert result.heatmap.shape == (2, 32, 32)
    assert np.isfinite(result.heatmap).all() and result.heatmap.max() == 0
    assert net.training  # MONAI switches to eval for the pass and back
    # hooks are made once per layer and method, not per call
    explain(net, torch.zeros(1, 1, 32, 32), target_layer="act")
    assert len(net.act._forward_hooks) == 1


def test_default_target_layer_is_the_deepest_map_larger_than_one_voxel():
    from monai.networks.nets import ResNet

    net = ResNet("basic", [1, 1, 1, 1], [8, 16, 32, 64], spatial_dims=3, n_input_channels=1, num_classes=3)
    assert default_target_layer(net, (1, 1, 32, 32, 32)) == "layer4"
    result = explain(net, torch.randn(1, 1, 32, 32, 32), class_index=2)
    assert result.target_layer == "layer4" and result.class_index == [2]
    assert result.heatmap.shape == (1, 32, 32, 32)
    assert result.probabilities.shape == (1, 3) and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SpineAIError, match="larger than one voxel"):
        default_target_layer(net, (1, 1, 1, 1, 1))


def test_bad_method_or_layer_named():
    net = BlobDetector()
    with pytest.raises(SpineAIError, match="unknown heatmap method 'lime'"):
        explain(net, blob_image(), method="lime")
    with pytest.raises(SpineAIError, match="'nope' is not a layer"):
        explain(net, blob_image(), target_layer="nope")


def test_a_target_layer_followed_by_an_in_place_activation():
    # ResNet bottlenecks run BatchNorm -> ReLU(inplace=True); with the weights frozen for the pass the
    # target's output is a leaf, which an in-place ReLU may not change ("a leaf Variable that requires
    # grad is being used in an in-place operation"). The map must be the one an out-of-place net gives.
    def net(inplace):
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                   torch.nn.ReLU(inplace=inplace), torch.nn.Conv2d(4, 4, 3, padding=1),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()

    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for method in ("gradcam", "gradcam++"):
        a = explain(net(True), x, method=method, target_layer="1")
        b = explain(net(False), x, method=method, target_layer="1")
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
        assert a.heatmap.max() == pytest.approx(1.0)
