"""Torch / MONAI plumbing shared by every learned SpineAI model.

- ``device``: CUDA when present, else CPU; a forced-CPU switch; mixed precision on GPU.
- ``bundle``: torch model bundles (safetensors weights, the network's MONAI class and arguments in
  the card; the network is built from the card, never from code inside the bundle).
- ``patches``: sampling a patch around a point in patient space at a model's spacing and
  orientation, and mapping a patch result back onto any image's own grid.
- ``training``: one training loop (seeded, checkpoints and resume, early stopping, progress with
  ETA, CSV + PNG log) that every learned model uses.

torch and MONAI are imported only here and below, never by ``import spineai``.
"""
