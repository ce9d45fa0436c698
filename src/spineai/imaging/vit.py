"""MONAI's ViT as a classifier with a spatial token map, so that Grad-CAM has a layer to explain.

MONAI's own ``ViT(classification=True)`` returns ``(logits, hidden states)`` and classifies from a
class token, which has no position: Grad-CAM on it gives nothing. Here the patch tokens are laid
back on their grid (``token_map``, an identity layer that Grad-CAM hooks) and averaged for the head.
"""

from __future__ import annotations

from typing import Sequence

import torch


class ViTClassifier(torch.nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, img_size: Sequence[int],
                 patch_size: Sequence[int], hidden_size: int = 192, mlp_dim: int = 768, num_layers: int = 6,
                 num_heads: int = 3, dropout_rate: float = 0.0):
        super().__init__()
        from monai.networks.nets import ViT

        self.vit = ViT(in_channels, img_size, patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                       num_layers=num_layers, num_heads=num_heads, classification=False,
                       dropout_rate=dropout_rate, spatial_dims=spatial_dims)
        self.grid = [int(i) // int(p) for i, p in zip(img_size, patch_size)]
        self.token_map = torch.nn.Identity()
        self.head = torch.nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        tokens = self.vit(x)[0]  # (N, L, hidden)
        fmap = self.token_map(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid))
        return self.head(fmap.flatten(2).mean(2))
