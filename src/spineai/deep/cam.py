"""Grad-CAM and Grad-CAM++ heatmaps from MONAI, with the classifier's probabilities from the same pass.

One forward and one backward pass per input give both the class probabilities and the map, so
explaining costs about two forward passes, not three. MONAI does the weighting; SpineAI adds what it
gets wrong for this use: its default normaliser inverts the map (min -> 1), its hooks are permanent
(so they are made once per network and layer, not per call), its Grad-CAM++ assumes one input per
call, and inference code often runs under ``torch.no_grad()``, which would leave the hooks empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from spineai.errors import SpineAIError

METHODS = ("gradcam", "gradcam++")


@dataclass
class CamResult:
    probabilities: object  # numpy (N, classes): softmax of the logits (sigmoid for one output)
    heatmap: object  # numpy float32 (N, *input spatial shape), each map in [0, 1]
    class_index: list  # the class each map explains
    target_layer: str
    method: str


def spatial_layers(network, input_shape: Sequence[int]) -> list:
    """``(name, output shape)`` of every module whose output is a feature map like the input's
    (same number of dimensions), in the order they run, for an input of ``input_shape`` (N, C, ...)."""
    import torch

    seen, handles = [], []

    def hook(name):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == len(input_shape):
                seen.append((name, tuple(output.shape)))
        return record

    for name, module in network.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    was_training = network.training
    try:
        network.eval()
        device = next(network.parameters()).device
        with torch.no_grad():
            network(torch.zeros(tuple(input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        network.train(was_training)
    return seen


def default_target_layer(network, input_shape: Sequence[int]) -> str:
    """The last layer whose feature map is still more than one voxel across in every axis: the usual
    Grad-CAM choice (the deepest features that still say *where*). A later layer pooled to 1 voxel
    would give a constant map."""
    candidates = [name for name, shape in spatial_layers(network, input_shape) if all(s > 1 for s in shape[2:])]
    if not candidates:
        raise SpineAIError(f"the network has no layer with a spatial feature map larger than one voxel for "
                           f"input shape {tuple(input_shape)}: Grad-CAM needs a larger input")
    return candidates[-1]


def _normalise(maps):
    """Each map scaled to [0, 1] (max -> 1); a flat map (no evidence anywhere) stays 0, never NaN."""
    import torch

    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1).values.view(-1, *[1] * (maps.dim() - 1))
    hi = flat.max(1).values.view(-1, *[1] * (maps.dim() - 1))
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(maps))


def _cam(network, layer: str, method: str):
    """The MONAI CAM object for this network, layer and method, made once (its hooks are permanent)."""
    import torch
    from monai.visualize import GradCAM, GradCAMpp
    from monai.visualize.class_activation_maps import ModelWithHooks

    class KeepLogits(ModelWithHooks):
        """The gradient at the target layer comes from a hook on its output tensor, which is made to
        require grad there: with the weights frozen (``explain``), the backward pass then runs only
        through the layers after the target, activations only (no weight gradients)."""

        def __init__(self, nn_module, layer):
            super().__init__(nn_module, layer, register_forward=False, register_backward=False)
            self.register_forward = self.register_backward = True  # __call__ reads activations and gradients
            dict(nn_module.named_modules())[layer].register_forward_hook(self._track(layer))

        def _track(self, name):
            def hook(_module, _inputs, output):
                if not torch.is_grad_enabled():
                    self.activations[name] = output
                    return None
                # With frozen weights the output is a leaf: it is made to require grad, and the next
                # layer gets a copy, since an in-place activation (ReLU after a BatchNorm target)
                # must not change a leaf that requires grad, nor the activation kept here.
                act = output if output.requires_grad else output.detach().requires_grad_(True)
                self.activations[name] = act
                # a module called several times in one pass (EfficientNet's shared swish) keeps the
                # last call's activation: keep that call's gradient, not the first one's
                act.register_hook(lambda grad: self.gradients.__setitem__(name, grad)
                                  if self.activations.get(name) is act else None)
                return None if act is output else act.clone()
            return hook

        def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
            out = super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            self.logits = out[0].detach()
            return out

    cams = network.__dict__.setdefault("_spineai_cams", {})
    key = (layer, method)
    if key not in cams:
        if layer not in dict(network.named_modules()):
            raise SpineAIError(f"Grad-CAM target layer {layer!r} is not a layer of this network")
        hooks = KeepLogits(network, layer)
        cls = GradCAMpp if method == "gradcam++" else GradCAM
        cams[key] = cls(nn_module=hooks, target_layers=layer, postprocessing=_normalise)
    return cams[key]


def explain(network, inputs, class_index: Optional[int] = None, method: str = "gradcam",
            target_layer: Optional[str] = None) -> CamResult:
    """Probabilities and a Grad-CAM (or Grad-CAM++) map for each input in ``inputs`` (N, C, ...).

    ``class_index`` None explains each input's most likely class. The network is used in eval mode
    (batch statistics must not change) with gradients on, whatever the caller's grad mode.
    """
    import torch

    if method not in METHODS:
        raise SpineAIError(f"unknown heatmap method {method!r} (choose from {', '.join(METHODS)})")
    inputs = torch.as_tensor(inputs)
    if inputs.dim() < 3:
        raise SpineAIError(f"Grad-CAM needs inputs shaped (N, C, spatial...), got {tuple(inputs.shape)}")
    layer = target_layer or default_target_layer(network, (1,) + tuple(inputs.shape[1:]))
    cam = _cam(network, layer, method)
    device = next(network.parameters()).device
    probabilities, maps, classes = [], [], []
    trainable = [p for p in network.parameters() if p.requires_grad]
    try:
        for p in trainable:  # no weight gradients: the backward pass stops at the target layer
            p.requires_grad_(False)
        with torch.enable_grad():
            for x in inputs:  # one at a time: MONAI's class score and Grad-CAM++ weights assume a batch of one
                x = x.unsqueeze(0).to(device=device, dtype=torch.float32)
                heat = cam(x, class_idx=class_index)
                logits = cam.nn_module.logits
                classes.append(int(cam.nn_module.class_idx))
                p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits.float(), 1)
                probabilities.append(p[0].cpu())
                maps.append(heat[0, 0].detach().float().cpu())
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return CamResult(torch.stack(probabilities).numpy(), torch.stack(maps).numpy(), classes, layer, method)
