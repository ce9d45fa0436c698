"""Seeded segmentation: one click gives a uint8 mask on the image's own grid.

``classic``: intensity-window level set (no learned weights; lesions and vertebral bodies).
The functions here are the public API; the command line and the Slicer modules call these.
"""

from __future__ import annotations

from spineai.segment.classic import SEGMENTATION_MODES, segment

__all__ = ["SEGMENTATION_MODES", "segment"]
