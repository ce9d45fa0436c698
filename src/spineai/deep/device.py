"""Where learned models run: CUDA when present, else CPU, unless the user forces the CPU."""

from __future__ import annotations

import contextlib
import os

from spineai.errors import SpineAIError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Set SPINEAI_DEVICE=cpu to force the CPU everywhere (command line, API, Slicer).
DEVICE_VARIABLE = "SPINEAI_DEVICE"


def require_torch():
    """Import torch, or say clearly what to install."""
    try:
        import torch  # noqa: F401
        import monai  # noqa: F401
    except ImportError as exc:
        raise SpineAIError(
            f"this needs the deep-learning extras ({exc.name} is missing): pip install 'spineai[deep]' "
            "(in 3D Slicer, install torch through the PyTorch extension)"
        ) from None
    return torch


def select_device(choice: str | None = None):
    """``'auto'`` (default; or the SPINEAI_DEVICE variable): CUDA when available, else CPU."""
    torch = require_torch()
    choice = (choice or os.environ.get(DEVICE_VARIABLE) or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise SpineAIError(f"unknown device {choice!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpineAIError("device 'cuda' was asked for, but torch sees no CUDA GPU (use 'cpu' or 'auto')")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def autocast(device):
    """Mixed precision on a GPU (bfloat16 where supported, else float16); plain float32 on the CPU,
    where autocast is slower than float32 on most processors."""
    torch = require_torch()
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def describe(device) -> str:
    torch = require_torch()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
