"""Pictures a person looks at: mask (and heatmap) overlays on the image, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from spineai.image import Volume, atomic_write, check_output_path, require_same_geometry


def _window(arr: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(arr, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def save_overlay_png(
    image: Volume,
    masks: Sequence[tuple[Volume, str, str]],
    path: str | Path,
    center_ijk: Sequence[int] | None = None,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Three orthogonal planes through ``center_ijk`` with each mask drawn as a coloured contour.

    ``masks`` holds ``(mask, label, colour)`` triples, e.g. ``[(truth, "truth", "lime"),
    (result, "segmented", "red")]``. The planes are the voxel grid's own (k, j and i constant), shown
    with true millimetre aspect ratios. The centre defaults to the first mask's centroid.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = check_output_path(path, overwrite)
    for mask, name, _ in masks:
        require_same_geometry(image, mask, "image", f"{name} mask")
    if center_ijk is None:
        nz = np.argwhere(masks[0][0].array > 0) if masks else np.empty((0, 3))
        kji = nz.mean(axis=0).round().astype(int) if len(nz) else np.asarray(image.array.shape) // 2
        center_ijk = (int(kji[2]), int(kji[1]), int(kji[0]))
    i, j, k = (int(v) for v in center_ijk)
    si, sj, sk = image.spacing
    lo, hi = _window(image.array)
    planes = [
        (f"k = {k}", lambda a: a[k, :, :], sj / si),
        (f"j = {j}", lambda a: a[:, j, :], sk / si),
        (f"i = {i}", lambda a: a[:, :, i], sk / sj),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 5))
    for ax, (name, take, aspect) in zip(axes, planes):
        ax.imshow(take(image.array), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        for mask, label, colour in masks:
            plane = take(mask.array) > 0
            if plane.any():
                ax.contour(plane.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], color=c, label=lab) for _, lab, c in masks]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png", overwrite=overwrite)
    plt.close(fig)
    return path
