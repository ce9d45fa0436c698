"""Seeded segmentation of a spine lesion or of a vertebral body, on MR or CT.

One click (a voxel index) inside the structure gives a uint8 mask on the image's own grid.

Method (every parameter follows from the image's spacing and intensity statistics, none from
one scan):

1. Crop a region of interest around the seed, sized in millimetres, and resample it to a working
   grid no finer than ``WORK_SPACING_MM`` (a 2 cm lesion needs no 0.4 mm voxels; this keeps the
   cost independent of the scanner's matrix).
2. Edge-preserving smoothing (curvature flow; the time step follows the voxel size so the filter
   stays stable on any spacing).
3. Robust statistics of the structure: median and MAD-based spread of the smoothed intensities in
   a ball around the seed (for a lesion, one that grows from the seed voxel up to 8 mm while the
   tissue stays uniform, so that a textured or graded lesion is sampled whole and a 1 cm one is
   not diluted with marrow; for a vertebral body the more uniform of a 6 mm and a 10 mm ball, so
   that a click next to an endplate does not take the endplate for marrow). The structure is
   bounded by darker and / or brighter tissue (MR: dark cortex and endplates, bright CSF or fat;
   CT: bright cortex, darker disc and soft tissue), so the intensity window is set on each side
   half-way between the structure's median and the typical intensity of the clearly darker /
   clearly brighter tissue around it. No sign assumption: the same rule serves bright lesions on
   T2, dark ones on T1, and CT bone.
4. A threshold level set (ITK's ThresholdSegmentationLevelSet) grows from the seed within that
   window, up to an iteration cap (see _evolve). When the clicked voxel itself is atypical (a
   necrotic loculus, a bone island) that spot counts as the structure and the largest in-window
   patch near it starts the front. A vertebral body's front starts from the in-window region
   around the seed, opened so that thin bridges break, instead of a small ball: it starts next to
   the body's surface and needs half the iterations or fewer. The curvature term keeps the front
   smooth, so it does not leak through the small gaps of a thin endplate or cortex the way plain
   region growing does, and it bridges isolated noisy voxels that make region growing stop early.
   A lesion whose first region is larger than its full statistics ball but whose median lies far
   from the click's own 2 mm neighbourhood grew the tissue around the click (a few-millimetre
   lesion whose ball grew through its rim): it is grown again from the click's 2 mm ball, its
   window bounded half-way to that region. A lesion smaller than its full statistics ball has its
   window re-set half-way between its region and the tissue around that region, and its front
   grown again (its small margin would otherwise let the front into the marrow's upper tail).
   Lesion mode then takes in the lesion's own out-of-window extremes at its margin (bright loculi,
   oedema brightest at an endplate: patches the region touches and that lie wholly within 5 mm of
   it) and lets the front grow on past them.
5. Clean-up on the image's own grid: within a distance bound from the seed (a lesion or a body is
   never larger), inside the optional anatomical label, the component holding the seed, holes
   filled. A vertebral body is also cut where it leaks into a neighbour (measured on 3 mm MR and
   CT, where the disc lies within the window and the front passes through endplate gaps): an
   opening breaks thin bridges, and a cut along the spine's long axis stops the body at the first
   slab whose median intensity is no longer marrow (a disc). Then up to two outer voxel layers are
   peeled where they are partial-volume mixtures beyond the cortex (on 3 mm scans a voxel that
   averages a thin cortex with the fat outside it looks like marrow): voxels lying between a
   darker and a brighter tissue, or with a thin dark or bright line between them and the seed.
6. Plausibility: a region that is tiny, implausibly large, or that reaches the search region's
   limit on all six sides (a seed on uniform background) raises SpineAIError instead of returning
   a meaningless mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from numbers import Integral
from typing import Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume, mask_from_labelmap, require_finite, require_same_geometry

SEGMENTATION_MODES = ("lesion", "vertebral-body")

# Working grid: never finer than this (mm); coarser input keeps its own spacing.
WORK_SPACING_MM = 1.0
# Lesion statistics ball: grows while each shell's median stays within this many spreads of the
# smallest ball's (see _structure_stats).
_UNIFORM_SPREADS = 2.5
# ... and while the ball's spread stays within this many of the smallest ball's: a shell that is
# half marrow keeps the lesion's median but not its spread (1 cm SD seed 1 on 4 mm slices: spread
# 20 -> 73 at 5 mm, window down into marrow, Dice 0.75; 1 cm STB seed 0: 0.22). On the default
# phantoms (2 cm, seeds 0-7) the 8 mm ball's spread stays within 3.0 of the smallest ball's.
_SPREAD_GROWTH = 3.2
# The level set has settled when a probe of a sixteenth of its iteration cap grows or shrinks the
# region by no more than this share (counting flipped voxels instead, the probe's own restart
# flips more than this, and 1 % stopped a 4 cm lesion on 4 mm slices while it still grew: Dice
# 0.976 -> 0.970).
_SETTLED_FRACTION = 0.003
# The slab cut's half-window (see _slab_cut) counts at most this many robust spreads of the body's
# region. On the CT cut through L1 (only four slices of the body left, seed at the endplate) a
# click one voxel off puts the statistics ball across the endplate: window upper bound 253-262
# instead of 171-191, while the region's spread only went 39-45 -> 50-52; the endplate slab
# (0.89-0.98 spreads from the region's median) then stayed within half the window and the front
# ran on into T12 (0.37-0.42 of the mask inside L1). Body slabs measured on every real sample and
# click one voxel off lie within 0.76 spreads (CT L2's end slab), so half of 1.65 spreads cuts
# between the two. Only then, though: lumbar MR bodies (spine-mr-bodies, 1 mm) have body slabs at
# 0.84 spreads (VB3_38 L1: Dice 0.775 -> 0.559 with the bound) or an integer-valued image whose
# slab medians move in steps of 0.67 spreads (VB2_09 L1: 0.679 -> 0.466; segmentation_accuracy.py
# --lumbar --against slab-bound-always). So the bound applies
# only when the statistics ball varied more than the region it grew, by _STRADDLE_RATIO: it took in
# something the body does not hold. The two spilling clicks: 1.35 and 1.54; the real samples'
# other clicks at most 1.23 (the lower cut's reference click, which holds either way), the bodies
# of four lumbar MR cases at most 1.11 (VB2_09 L1).
_SLAB_SPREADS = 1.65
_STRADDLE_RATIO = 1.3
# A lesion smaller than its full statistics ball gets its window re-set against the tissue around
# its own region (see _refit_to_surroundings): a ring this wide (at least a voxel along every axis),
# at most this many times. Measured on the small cases of segmentation_accuracy.py --sweep: rings of 3-4 mm
# gave the same 1 cm results within 0.02; 2 mm lost 1 cm STB seed 1 on 1 mm slices (0.84 -> 0.79);
# six rounds instead of three changed no case by more than 0.03.
_SURROUNDINGS_MM = 3.0
_REFIT_ROUNDS = 3
# Opening of the in-window region that starts a vertebral body's level set (see _ModeParams.start_reach_mm):
# 3 mm also broke the T2 C7 body at its waist (Dice 0.882 -> 0.810).
_START_OPENING_MM = 2.0
# A lesion's first region whose median lies more than this many of its spreads from the click's
# 2 mm ball is not what the click sits in (see _regrow_from_the_click). Measured with
# benchmarks/segmentation_accuracy.py (default phantoms; --sweep, seeds 0-9 for 6 mm and 1 cm):
# correct regions at most 2.51 (default STB seed 2), the wrong ones 3.33-8.60 (3.5 left 4 mm 6 mm
# MET seed 3 at 3.42 and STB seed 5 at 3.33, Dice 0.01). Seed 7's low-contrast lesions at 2.35,
# 2.63 and 2.96 stay missed.
_FOREIGN_SPREADS = 3.0


@dataclass(frozen=True)
class _ModeParams:
    roi_half_mm: float  # half-size of the cropped region of interest
    max_radius_mm: float  # nothing farther than this from the seed belongs to the structure
    stats_radius_mm: float  # ball around the seed whose intensities describe the structure
    neighbour_quantile: float  # where in the darker / brighter tissue the neighbour level sits
    curvature: float  # level-set curvature weight (smoothness of the front)
    min_volume_mm3: float
    max_volume_mm3: float
    # Vertebral body only (0 = off): radius of the opening that breaks thin bridges through
    # endplate or cortex gaps, the slab-median cut along the spine's long axis (see _slab_cut), and
    # how many outer voxel layers may be peeled as partial-volume mixtures (see _peel_partial_volume).
    open_radius_mm: float = 0.0
    slab_cut: float = 0.0
    partial_volume_layers: int = 0
    # Vertebral body only (0 = off): a second, wider statistics ball; the statistics come from
    # whichever of the two is more uniform. A 6 mm ball from a click one voxel off can straddle an
    # endplate and widen the window until the front leaks (3 mm CT L1 one slice up: spread 16 -> 52,
    # 0.60 of the mask inside its vertebra); the 10 mm ball then dilutes the endplate with marrow.
    # A body holding a lesion keeps the 6 mm ball's statistics (the wide one mixes the two, and the
    # front would run through both: measured on the phantoms).
    wide_stats_radius_mm: float = 0.0
    # Lesion only (0 = off): out-of-window patches touching the region and lying wholly within this
    # distance of it are the lesion's own extremes (see _take_enclosed_extremes).
    extreme_reach_mm: float = 0.0
    # Share of the level set's iteration cap run before the first test whether the front has
    # settled (see _evolve); 0 runs to the cap in one go. Off in both modes: measured with
    # benchmarks/segmentation_accuracy.py (phantom seeds 0-7, lesions 4 cm on 1 and 4 mm slices) it
    # saves no iterations overall (half the cap: 10,996 vs 7,699 on the 24 phantoms; 16 fronts still
    # grow at half the cap and pay the half run and the probe on top of the full run),
    # and a probe loose enough to stop early loses Dice (1 % flipped: 4 cm MET on 4 mm slices
    # 0.976 -> 0.970). Vertebral bodies still move at half the cap (T2 C6 Dice 0.73 there vs 0.87).
    settle_share: float = 0.0
    # Vertebral body only (0 = off): the level set starts from the in-window region around the seed,
    # opened by ``_START_OPENING_MM`` (thin bridges through endplate gaps and into discs break) and
    # eroded by a voxel, not from a small ball, so its front starts next to the body's surface and
    # needs to move only this far (an iteration cap of 160 instead of 420 on a 1 mm grid). A front
    # grown from a ball through a body cut by the field of view reached the disc beyond the cut from
    # clicks one voxel off (CT L1 cut: median 0.688 of the mask inside, now 0.950); measured with
    # benchmarks/segmentation_accuracy.py --real, where no case loses more than 0.014. It costs
    # 1 mm lumbar MR (--lumbar, 73 bodies): Dice 0.7006 -> 0.6945, one body 0.744 -> 0.661 (the
    # front starts beyond weak boundaries a ball's front stops at); the learned model serves those.
    start_reach_mm: float = 0.0


# Lumbar vertebral bodies are at most ~50 x 35 x 30 mm (about 40 ml); lesions (up to ~5 cm
# across) are inside or
# around them. The neighbour quantile places the "other tissue" level: the nearer it is to the
# structure's side (q > 50), the tighter the window. Lesions (q 75) sit in marrow whose texture
# overlaps their margin; bodies (q 62) must also leave out discs close to marrow intensity.
# The statistics ball must sample a lesion's own texture and internal gradient (oedema brighter
# towards an endplate, necrotic loculi): a 3 mm ball saw too little of it and cut the window
# inside the lesion (phantom SD Dice 0.54-0.67); 8 mm fits inside a ~2 cm lesion and fixed that
# (measured: 0.89-0.96). Taking in the margin's out-of-window patches (extreme_reach_mm) lifted
# the lowest cases (SD 0.889 -> 0.932, STB 0.871 -> 0.910 over phantom seeds 0-7).
_MODES = {
    "lesion": _ModeParams(40.0, 35.0, 8.0, 75.0, 1.0, 20.0, 90_000.0, extreme_reach_mm=5.0),
    "vertebral-body": _ModeParams(40.0, 32.0, 6.0, 62.0, 2.0, 300.0, 90_000.0, 3.0, 0.5, 2, 10.0,
                                  start_reach_mm=6.0),
}


def segment(
    image: Volume,
    seed_ijk: Sequence[int],
    mode: str = "lesion",
    within: Volume | None = None,
    within_label: int | None = None,
) -> Volume:
    """Segment the lesion (``mode='lesion'``) or vertebral body (``'vertebral-body'``) holding the seed.

    ``seed_ijk`` is the voxel index (i, j, k) of the click. ``within`` is an optional label map on
    the image's grid (e.g. TotalSegmentator vertebrae); the result never leaves its label
    ``within_label``, or when that is None, the label found under the seed. Returns a uint8 mask
    (1 = segmented) with exactly the image's geometry.
    """
    import SimpleITK as sitk

    if mode not in SEGMENTATION_MODES:
        raise SpineAIError(f"unknown segmentation mode {mode!r}: choose one of {', '.join(SEGMENTATION_MODES)}")
    params = _MODES[mode]
    require_finite(image)
    if np.iscomplexobj(image.array) or image.array.dtype == object:
        raise SpineAIError(f"the image has voxels of type {image.array.dtype}: expected real scalar values")
    thin = [f"{n} voxel(s) along {ax}" for ax, n in zip("ijk", image.size_ijk) if n < 3]
    if thin:
        raise SpineAIError(f"the image has only {', '.join(thin)}: 3D segmentation needs at least 3 "
                           f"slices along every axis (is this a single slice or a 2D image?)")
    seed = _check_seed(image, seed_ijk)
    allowed = _within_mask(image, seed, within, within_label)

    sp = np.asarray(image.spacing, float)  # (i, j, k)
    half = np.ceil(params.roi_half_mm / sp).astype(int)
    lo = np.maximum(np.asarray(seed) - half, 0)
    hi = np.minimum(np.asarray(seed) + half + 1, np.asarray(image.size_ijk))
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    crop = np.ascontiguousarray(image.array[box], dtype=np.float32)
    seed_kji = (seed[2] - lo[2], seed[1] - lo[1], seed[0] - lo[0])

    crop_img = sitk.GetImageFromArray(crop)
    crop_img.SetSpacing(tuple(sp))
    work, work_seed = _to_work_grid(crop_img, seed_kji)
    wsp = np.asarray(work.GetSpacing(), float)

    # Curvature flow: stable for time steps up to (min spacing)^2 / 2^(N+1) in N = 3 dimensions.
    smooth = sitk.CurvatureFlow(work, timeStep=float(min(wsp)) ** 2 / 16.0, numberOfIterations=3)
    sm = sitk.GetArrayFromImage(smooth)
    dist = _distance_mm(sm.shape, wsp, work_seed)
    noise = _noise_floor(sm, dist, wsp)
    full_ball_mm3 = 4.0 / 3.0 * np.pi * params.stats_radius_mm ** 3
    centre, spread, stats_radius = _structure_stats(sm, dist, wsp, noise, params)
    params = replace(params, stats_radius_mm=stats_radius)
    if spread <= 1e-6 * max(1.0, abs(centre)):
        raise SpineAIError(
            f"the image is flat around the seed at voxel index {list(seed)} (every voxel near it is "
            f"{centre:.4g}): the seed is on background or padding, where nothing can be segmented"
        )
    near = dist <= params.max_radius_mm
    image_sm, image_smooth = sm, smooth
    lower, upper, smooth, sm = _window_and_spot(sitk, smooth, sm, dist, work_seed, near, centre, spread, params)
    phi = _level_set(sitk, smooth, sm, dist, work_seed, lower, upper, params)
    if params.extreme_reach_mm > 0:
        regrown = _regrow_from_the_click(sitk, phi, image_smooth, image_sm, dist, work_seed, near, noise, params,
                                         full_ball_mm3)
        if regrown is not None:
            phi, smooth, sm, centre, lower, upper, params = regrown
        phi, lower, upper = _refit_to_surroundings(sitk, phi, smooth, sm, dist, work_seed, centre, lower, upper,
                                                   params, near, full_ball_mm3)
        # Let the front take in the lesion's own out-of-window extremes that it stopped at, and
        # grow on past them (the in-window lesion behind such a patch was unreachable).
        feature = sm.copy()
        for _ in range(2):
            take = _enclosed_extremes(sitk, phi, feature, lower, upper, params.extreme_reach_mm)
            if not take.any():
                break
            feature[take] = centre
            phi = _evolve(sitk, phi, _like(sitk, feature, phi), lower, upper, params,
                          reach_mm=params.extreme_reach_mm)
    # Back on the crop grid by linear interpolation of the level-set function (a smooth surface,
    # not a blocky upsampled mask).
    phi_crop = sitk.GetArrayFromImage(
        sitk.Resample(phi, crop_img, sitk.Transform(), sitk.sitkLinear, -1.0e3, sitk.sitkFloat32)
    )
    region = (phi_crop > 0) & (_distance_mm(crop.shape, sp, seed_kji) <= params.max_radius_mm)
    if allowed is not None:
        region &= allowed[box]
    search = _distance_mm(crop.shape, sp, seed_kji) <= params.max_radius_mm
    search[0], search[-1], search[:, 0], search[:, -1], search[:, :, 0], search[:, :, -1] = (False,) * 6
    region = _seed_component(sitk, region, seed_kji,
                             near=_distance_mm(crop.shape, sp, seed_kji) <= max(params.stats_radius_mm / 2, 2.0 * max(wsp)))
    if allowed is not None:
        # The anatomical label already bounds the body from outside; its own rim is not spill.
        params = replace(params, partial_volume_layers=0)
    if params.open_radius_mm > 0 or params.slab_cut > 0 or params.partial_volume_layers > 0:
        region = _cut_bridges(sitk, region, crop, sp, seed_kji, image.direction, centre, spread, lower, upper, params)
    region = sitk.GetArrayFromImage(sitk.BinaryFillhole(_as_sitk(sitk, region, sp))) > 0
    if allowed is not None:
        region &= allowed[box]

    _check_plausible(region, sp, params, mode, seed, lower, upper, centre)
    if _reaches_every_side(region, search, 2 * int(np.ceil(max(wsp) / min(sp)))):
        # No boundary anywhere within reach: the seed is on a uniform background, not a structure
        # (a real body or lesion may reach the field of view's edge on a side or two, not on all six).
        raise SpineAIError(
            f"the region grown from the seed at voxel index {list(seed)} fills the whole search region "
            f"({params.max_radius_mm:.0f} mm around the seed): nothing there has a boundary; the seed "
            f"is probably on background: click inside the {'lesion' if mode == 'lesion' else 'vertebral body'}"
        )
    out = np.zeros(image.array.shape, np.uint8)
    out[box] = region
    return image.with_array(out)


def _window_and_spot(sitk, smooth, sm, dist, seed_kji, near, centre, spread, params: _ModeParams):
    """The intensity window (lower, upper), and the smoothed image (sitk, array) to grow the front on."""
    lower, upper = _intensity_window(sm[near], centre, spread, params.neighbour_quantile)
    if not lower <= sm[seed_kji] <= upper:
        # The clicked voxel is atypical (noise, a vessel, a necrotic loculus, a bone island): the
        # out-of-window spot holding it, within the start ball, counts as the structure. Left out,
        # the front starts as a thin shell round it and collapses (3 mm CT, L1 clicked on a
        # two-voxel bone island: nothing grew, the click was refused).
        start = dist <= _start_radius(smooth.GetSpacing(), params)
        spot = _seed_component(sitk, start & ((sm < lower) | (sm > upper)), seed_kji)
        sm = sm.copy()
        sm[spot] = centre
        smooth = _like(sitk, sm, smooth)
    return lower, upper, smooth, sm


def _regrow_from_the_click(sitk, phi, smooth, sm, dist, seed_kji, near, noise, params: _ModeParams, max_mm3):
    """Grow a lesion again from the click's own 2 mm ball when the first front grew something else.

    A lesion of a few millimetres with a rim half-way to the marrow (6 mm STB on 1 mm slices) lets
    the statistics ball grow through the rim into the marrow: the ball's median is then the
    marrow's, and so is the region the front grows, larger than the full ball (Dice 0.01). Such a
    region's median lies more than ``_FOREIGN_SPREADS`` of its own spreads from the median of the
    2 mm ball around the click; in every correct region measured it lies within 2.51 (default
    phantoms seeds 0-7, lesions 2-4 cm on 1 and 4 mm slices seeds 0-1). Then the window comes from
    the click's ball, its bound on the region's side half-way between the two medians (the region
    is the tissue around the lesion), and the front grows again: the refit against the
    surroundings that follows handles it as the small lesion it is. ``smooth`` and ``sm`` are the
    smoothed image before any atypical spot was filled in. Returns None when the first front
    stands, else (phi, smooth, sm, centre, lower, upper, params) for the lesion.
    """
    inside = sitk.GetArrayFromImage(phi) > 0
    if np.count_nonzero(inside) * float(np.prod(smooth.GetSpacing())) < max_mm3:
        return None  # the refit against the surroundings serves smaller regions
    small = _click_ball_radius(smooth.GetSpacing())
    (centre, spread), region_centre, apart = _click_against_region(sm, inside, dist <= small, noise)
    if apart <= _FOREIGN_SPREADS:
        return None
    params = replace(params, stats_radius_mm=small)
    lower, upper, smooth, sm = _window_and_spot(sitk, smooth, sm, dist, seed_kji, near, centre,
                                                max(spread, noise), params)
    cut = 0.5 * (centre + region_centre)
    if region_centre < centre:
        lower = max(lower, cut)
    else:
        upper = min(upper, cut)
    phi = _level_set(sitk, smooth, sm, dist, seed_kji, lower, upper, params)
    return phi, smooth, sm, centre, lower, upper, params


def _click_ball_radius(wsp) -> float:
    """Radius (mm) of the ball round the click that samples what it sits in: 2 mm, at least a voxel."""
    return max(2.0, 1.01 * min(wsp)) + 0.01


def _click_against_region(sm, inside, ball, noise):
    """((median, spread) of the click's ball, the region's median, how many of the region's spreads
    the two medians lie apart)."""
    region_centre, region_spread = _robust_stats(sm[inside])
    click = _robust_stats(sm[ball])
    return click, region_centre, abs(click[0] - region_centre) / max(region_spread, noise)


# ---- validation ------------------------------------------------------------------------------

def _check_seed(image: Volume, seed_ijk) -> tuple[int, int, int]:
    try:
        values = list(seed_ijk)
    except TypeError:
        raise SpineAIError(f"the seed must be a voxel index (i, j, k), got {seed_ijk!r}") from None
    if len(values) != 3 or not all(
        isinstance(v, Integral) or (isinstance(v, (float, np.floating)) and float(v).is_integer())
        for v in values
    ):
        raise SpineAIError(f"the seed must be three integer voxel indices (i, j, k), got {seed_ijk!r}")
    seed = tuple(int(v) for v in values)
    if any(v < 0 or v >= n for v, n in zip(seed, image.size_ijk)):
        raise SpineAIError(
            f"the seed at voxel index {list(seed)} lies outside the image ({image.size_ijk} voxels, "
            "index 0..size-1 on each axis)"
        )
    return seed


def _within_mask(image: Volume, seed, within: Volume | None, within_label: int | None):
    if within is None:
        if within_label is not None:
            raise SpineAIError("within_label was given without a within label map")
        return None
    require_same_geometry(image, within, "image", "within label map")
    if within_label is None:
        under_seed = within.array[seed[2], seed[1], seed[0]]
        if under_seed == 0:
            raise SpineAIError(
                f"the seed at voxel index {list(seed)} lies on background (label 0) of the within label map: "
                "click inside the labelled structure or pass within_label"
            )
        within_label = int(under_seed)
    allowed = mask_from_labelmap(within, int(within_label), what="within label map")
    if not allowed[seed[2], seed[1], seed[0]]:
        raise SpineAIError(
            f"the seed at voxel index {list(seed)} lies outside label {within_label} of the within label map"
        )
    return allowed


def _check_plausible(region, sp, params: _ModeParams, mode, seed, lower, upper, centre) -> None:
    voxel_mm3 = float(np.prod(sp))
    volume = float(region.sum()) * voxel_mm3
    what = "lesion" if mode == "lesion" else "vertebral body"
    window = f"intensity window {lower:.4g}..{upper:.4g} around {centre:.4g}"
    if volume < max(params.min_volume_mm3, 4 * voxel_mm3):
        raise SpineAIError(
            f"the seed at voxel index {list(seed)} grows nothing plausible: {int(region.sum())} voxel(s) "
            f"({volume:.0f} mm^3, {window}); a {what} is at least {params.min_volume_mm3:.0f} mm^3. "
            "The seed is probably on background or on a thin structure: click inside the "
            f"{what}"
        )
    if volume > params.max_volume_mm3:
        raise SpineAIError(
            f"the region grown from the seed at voxel index {list(seed)} is implausibly large "
            f"({volume / 1000:.0f} ml, {window}): the seed is probably on background or the {what} "
            "has no contrast to its surroundings; click inside the "
            f"{what} or bound it with a within label map"
        )


def _reaches_every_side(region: np.ndarray, search: np.ndarray, tol: int) -> bool:
    """True when the region comes within ``tol`` voxels of the search region's limit on all six sides."""
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        have = np.flatnonzero(region.any(axis=other))
        lim = np.flatnonzero(search.any(axis=other))
        if not have.size or not lim.size or have[0] > lim[0] + tol or have[-1] < lim[-1] - tol:
            return False
    return True


# ---- steps ----------------------------------------------------------------------------------

def _as_sitk(sitk, mask: np.ndarray, spacing):
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def _to_work_grid(crop_img, seed_kji):
    """Resample the crop so no axis is finer than WORK_SPACING_MM (cost independent of matrix size)."""
    import SimpleITK as sitk

    sp = np.asarray(crop_img.GetSpacing(), float)
    wsp = np.maximum(sp, WORK_SPACING_MM)
    if np.allclose(wsp, sp):
        return crop_img, seed_kji
    size = np.maximum(np.round(np.asarray(crop_img.GetSize()) * sp / wsp).astype(int), 1)
    # Keep the physical extent centred: the first working voxel centre sits half a working voxel in.
    origin = np.asarray(crop_img.GetOrigin()) - sp / 2 + wsp / 2
    blur = sitk.SmoothingRecursiveGaussian(crop_img, [float(max(w / 2.0, s)) for w, s in zip(wsp, sp)]) \
        if np.any(wsp > 1.5 * sp) else crop_img
    work = sitk.Resample(blur, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear,
                         tuple(origin), tuple(wsp), crop_img.GetDirection(), 0.0, sitk.sitkFloat32)
    seed_phys = crop_img.TransformIndexToPhysicalPoint((int(seed_kji[2]), int(seed_kji[1]), int(seed_kji[0])))
    idx = work.TransformPhysicalPointToIndex(seed_phys)
    idx = [int(min(max(v, 0), n - 1)) for v, n in zip(idx, work.GetSize())]
    return work, (idx[2], idx[1], idx[0])


def _distance_mm(shape_kji, spacing_ijk, centre_kji) -> np.ndarray:
    k, j, i = np.ogrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]]
    return np.sqrt(
        ((k - centre_kji[0]) * spacing_ijk[2]) ** 2
        + ((j - centre_kji[1]) * spacing_ijk[1]) ** 2
        + ((i - centre_kji[2]) * spacing_ijk[0]) ** 2
    ).astype(np.float32)


def _robust_stats(values: np.ndarray) -> tuple[float, float]:
    centre = float(np.median(values))
    return centre, 1.4826 * float(np.median(np.abs(values - centre)))


def _structure_stats(sm, dist, wsp, noise, params: _ModeParams) -> tuple[float, float, float]:
    """Median, spread (never below the noise) and radius of the ball that describes the structure.

    Vertebral body: the more uniform of two fixed balls (see _ModeParams). Lesion: a ball that
    starts at the seed voxel and its face neighbours and grows by 1 mm, up to ``stats_radius_mm``,
    while each new shell's median stays within ``_UNIFORM_SPREADS`` spreads (of that smallest
    ball, which no other tissue has yet widened) of the ball's median and the ball's spread within
    ``_SPREAD_GROWTH`` of the smallest ball's. An 8 mm ball samples a
    2 cm lesion's texture whole, but around a 1 cm lesion it is mostly marrow, and its median
    then describes the marrow (phantom, 4 mm slices: Dice 0.06).
    """
    if params.wide_stats_radius_mm:
        radii = (params.stats_radius_mm, params.wide_stats_radius_mm)
        centre, spread = min((_robust_stats(sm[dist <= max(r, 1.01 * max(wsp))]) for r in radii),
                             key=lambda cs: cs[1])
        return centre, max(spread, noise), params.stats_radius_mm
    # From the seed voxel and its face neighbours; when the very first shell already differs, the
    # click sits on something under 2 mm across (a necrotic loculus, a vessel, noise), smaller than
    # any lesion worth segmenting: start again from the 2 mm ball around it.
    for start in (1.01 * min(wsp), _click_ball_radius(wsp)):
        radius = start
        centre, spread = _robust_stats(sm[dist <= radius])
        smallest = spread = max(spread, noise)
        for r in [*np.arange(radius + 1.0, params.stats_radius_mm, 1.0), params.stats_radius_mm]:
            shell = sm[(dist > radius) & (dist <= r)]
            if shell.size and abs(float(np.median(shell)) - centre) > _UNIFORM_SPREADS * smallest:
                break
            grown = _robust_stats(sm[dist <= r])
            if grown[1] > _SPREAD_GROWTH * smallest:
                break
            radius = float(r)
            centre, spread = grown[0], max(grown[1], noise)
        if radius > start:
            break
    return centre, spread, radius


def _noise_floor(sm: np.ndarray, dist: np.ndarray, wsp) -> float:
    """Residual noise of the smoothed image near the seed (MAD of neighbour differences)."""
    near = dist <= 4 * max(wsp)
    d = np.diff(sm, axis=2)[near[:, :, 1:]] / np.sqrt(2.0)
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) if d.size else 0.0


def _intensity_window(values: np.ndarray, centre: float, spread: float, q: float) -> tuple[float, float]:
    """Half-way between the structure and the clearly darker / brighter tissue around it.

    Voxels more than 2.5 robust spreads from the structure's median are "clearly other" tissue;
    their ``q``-th percentile (counted from the structure's side) stands for the neighbour. Where
    there is no such tissue on a side, the window stops at 3 spreads.
    """
    margin = 2.5 * spread
    dark = values[values < centre - margin]
    bright = values[values > centre + margin]
    enough = max(20, values.size // 200)
    lower = centre - 0.5 * (centre - np.percentile(dark, q)) if dark.size >= enough else centre - 3 * spread
    upper = centre + 0.5 * (np.percentile(bright, 100 - q) - centre) if bright.size >= enough else centre + 3 * spread
    return float(lower), float(upper)


def _start_radius(wsp, params: _ModeParams) -> float:
    """Radius (mm) of the ball around the seed whose in-window voxels start the level set."""
    return max(2.0 * max(wsp), params.stats_radius_mm / 2)


def _level_set(sitk, smooth, sm, dist, seed_kji, lower, upper, params: _ModeParams):
    """Grow a threshold level set from the seed's in-window neighbourhood; returns phi (>0 inside)."""
    wsp = smooth.GetSpacing()
    # Start from the in-window voxels near the seed; when the click itself falls on an atypical
    # spot (a necrotic loculus, a vessel) its neighbourhood still starts the front.
    ball = dist <= _start_radius(wsp, params)
    feature = sitk.GetArrayFromImage(smooth)
    start = ball & (feature >= lower) & (feature <= upper)
    if start[seed_kji]:
        start = _seed_component(sitk, start, seed_kji)
    elif start.any():
        labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(start.astype(np.uint8))))
        start = labels == int(np.argmax(np.bincount(labels[start])))  # largest in-window patch
    # The seed voxel always belongs to the start: without it a patch around an atypical seed is a
    # shell, and the level set (measured on CT) collapses it to nothing.
    start[seed_kji] = True
    if params.start_reach_mm:
        window = (feature >= lower) & (feature <= upper) & (dist <= params.max_radius_mm)
        radius = [max(1, int(round(_START_OPENING_MM / s))) for s in wsp]
        opened = sitk.GetArrayFromImage(
            sitk.BinaryMorphologicalOpening(_as_sitk(sitk, window, wsp), radius, sitk.sitkBall)) > 0
        body = _seed_component(sitk, opened, seed_kji, near=ball)
        if body.any():
            start |= sitk.GetArrayFromImage(sitk.BinaryErode(_as_sitk(sitk, body, wsp), [1, 1, 1], sitk.sitkBall)) > 0
    init = _as_sitk(sitk, start, wsp)
    init.CopyInformation(smooth)
    phi0 = _signed_distance(sitk, init)
    if not np.any(sitk.GetArrayViewFromImage(phi0) > 0):
        # The map puts a region's own boundary voxels at 0, so a start less than three voxels thick
        # along an axis (one or two 4 mm slices of a small lesion) has no voxel inside its front and
        # the level set loses it (6 mm lesions on 4 mm slices: refused in 5 of 6 phantoms; 1 cm MET
        # seed 0: Dice 0.66). Such a start gets its front half a voxel outside its boundary voxels,
        # midway to the background's. Only there: thicker starts keep their tuned course (shifting
        # every start moved STB seed 0 0.914 -> 0.904 and halved a cut CT vertebra's body).
        phi0 = (phi0 - _signed_distance(sitk, 1 - init)) * 0.5
    return _evolve(sitk, phi0, sitk.Cast(smooth, sitk.sitkFloat32), lower, upper, params,
                   reach_mm=params.start_reach_mm or None)


def _refit_to_surroundings(sitk, phi, smooth, sm, dist, seed_kji, centre, lower, upper,
                           params: _ModeParams, near, max_mm3):
    """Re-set a small lesion's window against the tissue around its region; returns (phi, lower, upper).

    The window's neighbour levels come from the whole neighbourhood (muscle, cortex, disc beside
    the marrow): right for a lesion that fills its statistics ball, whose margin is a small share
    of it, but the front of a smaller one runs on into the marrow's upper tail (1 cm lesions on
    4 mm slices: Dice 0.67-0.92, the bound 20-60 grey levels below the best). So while the region
    is smaller than the full ball, the bound on the side of the tissue around it (a ring
    ``_SURROUNDINGS_MM`` wide) moves to half-way between the region's median and that tissue's,
    and the front grows again from its start: Ridler and Calvard's iterative intermeans threshold,
    at most ``_REFIT_ROUNDS`` times. The bound only ever tightens. A region whose median lies nearer
    its surroundings' than the statistics ball's (``centre``) is mostly that tissue: the front ran
    into it (6 mm lesions on 1 mm slices: the 2 mm ball straddles the margin, its spread lets the
    marrow into the window, the region is 3-17x the lesion), so the ball's median stands for the
    lesion there (6 mm: 4 mm slices SD seed 1 0.64 -> 0.93, 1 mm slices SD / MET seed 1 0.09 / 0.15
    -> 0.91 / 0.93). On 4 mm slices 1 cm STB seed 1 (0.87) is the nearest case the other way: its
    region's median is 129 grey levels from its surroundings' and 124 from the ball's.
    """
    wsp = smooth.GetSpacing()
    for _ in range(_REFIT_ROUNDS):
        inside = sitk.GetArrayFromImage(phi) > 0
        if not 0 < np.count_nonzero(inside) * float(np.prod(wsp)) < max_mm3:
            break
        ring = (_distance_outside(sitk, inside, wsp) <= max(_SURROUNDINGS_MM, max(wsp))) & ~inside & near
        if not ring.any():
            break
        level, around = float(np.median(sm[inside])), float(np.median(sm[ring]))
        if abs(level - around) < abs(centre - level):
            level = centre
        cut = 0.5 * (level + around)
        if around < level and cut > lower:
            lower = cut
        elif around > level and cut < upper:
            upper = cut
        else:
            break
        phi = _level_set(sitk, smooth, sm, dist, seed_kji, lower, upper, params)
    return phi, lower, upper


def _distance_outside(sitk, inside: np.ndarray, wsp) -> np.ndarray:
    """Signed distance (mm) of every voxel from the region ``inside``: > 0 outside it, <= 0 on and in it."""
    return -sitk.GetArrayFromImage(_signed_distance(sitk, _as_sitk(sitk, inside, wsp)))


def _signed_distance(sitk, mask):
    """Signed distance (mm, > 0 inside) of a uint8 mask image; its boundary voxels are at 0."""
    return sitk.Cast(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=True, useImageSpacing=True,
                                                  squaredDistance=False), sitk.sitkFloat32)


def _evolve(sitk, phi0, feature, lower, upper, params: _ModeParams, reach_mm: float | None = None):
    """Run ITK's threshold level set from ``phi0`` (>0 inside) on ``feature``; returns phi.

    ``reach_mm`` bounds how far the front needs to move (default: the mode's whole radius), which
    sets the iteration cap. The front's RMS change often levels off above ITK's threshold (noise
    keeps a few front voxels flipping), and raising the threshold stops some fronts while a part of
    them still moves (phantom Dice down by up to 0.03 at 0.02, 0.12 at 0.03). So with ``settle_share``
    set, the level set first runs that share of the cap from ``phi0``, then a short probe continues
    from its result: when the probe changes the region's size by no more than ``_SETTLED_FRACTION``, the
    front has settled and the first run's result is returned as it is (exactly what one run of
    that many iterations gives). Otherwise the share doubles, again from ``phi0``, up to the cap.
    The probe's restart re-initialises ITK's sparse field, which moves the front a little (50-
    iteration chunks fed from one another: STB seed 5 Dice 0.910 -> 0.888), so its result only
    tests, it is never kept. The lesion's second pass also runs on the whole grid: confined to a
    box three reaches around the patches it takes in, it froze a 4 cm lesion's front elsewhere
    (4 mm slices, SD seed 1: Dice 0.945 -> 0.943).
    """
    wsp = feature.GetSpacing()
    ls = sitk.ThresholdSegmentationLevelSetImageFilter()
    ls.SetLowerThreshold(float(lower))
    ls.SetUpperThreshold(float(upper))
    ls.SetCurvatureScaling(params.curvature)
    ls.SetPropagationScaling(1.0)
    ls.SetMaximumRMSError(0.01)
    ls.ReverseExpansionDirectionOn()
    # The front moves well under a voxel per iteration: allow enough to cross the bound several
    # times.
    cap = int(10 * (reach_mm or params.max_radius_mm) / min(wsp)) + 100
    n = int(cap * params.settle_share) if params.settle_share else cap
    probe = max(cap // 16, 10)
    while True:
        ls.SetNumberOfIterations(min(n, cap))
        phi = ls.Execute(phi0, feature)
        if n >= cap or ls.GetElapsedIterations() < n:  # the cap, or ITK's own criterion stopped it
            return phi
        ls.SetNumberOfIterations(probe)
        size = np.count_nonzero(sitk.GetArrayViewFromImage(phi) > 0)
        grown = np.count_nonzero(sitk.GetArrayViewFromImage(ls.Execute(phi, feature)) > 0) - size
        if abs(grown) <= _SETTLED_FRACTION * max(size, 1):
            return phi
        n *= 2


def _enclosed_extremes(sitk, phi, feature, lower, upper, reach_mm) -> np.ndarray:
    """Out-of-window patches that the level set's region nearly encloses (a mask on the work grid).

    A heterogeneous lesion has parts beyond its own window (SD oedema brightest at the endplate,
    STB necrotic loculi): where such a patch lies at the lesion's margin it is no hole, and the
    front stops at it. Other tissue beyond the window (disc, CSF, surrounding marrow) is either
    kept from the lesion by tissue on the window's other side (cortex) or extends far beyond it;
    so a patch counts only when it touches the region and lies wholly within ``reach_mm`` of it.
    """
    inside = sitk.GetArrayFromImage(phi) > 0
    if not inside.any():
        return inside
    wsp = phi.GetSpacing()
    away = _distance_outside(sitk, inside, wsp)
    take = np.zeros_like(inside)
    # Each side on its own: a bright patch must not merge, voxel to voxel through noise, with the
    # dark marrow around the lesion (and fail the reach test for it).
    for out in (feature < lower, feature > upper):
        out &= ~inside
        labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(_as_sitk(sitk, out, wsp)))
        touching = np.unique(labels[out & (away <= 1.01 * min(wsp))])
        too_far = np.unique(labels[out & (away > reach_mm)])
        take |= np.isin(labels, np.setdiff1d(touching, too_far)) & out
    return take


def _like(sitk, array: np.ndarray, ref):
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.CopyInformation(ref)
    return img


def _seed_component(sitk, mask: np.ndarray, seed_kji, near: np.ndarray | None = None) -> np.ndarray:
    """The connected component holding the seed; when the seed voxel is not in the mask, the
    component with the most voxels in ``near`` (the seed's neighbourhood), if given."""
    if not mask[seed_kji] and (near is None or not (mask & near).any()):
        return np.zeros_like(mask, dtype=bool)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    if mask[seed_kji]:
        return labels == labels[seed_kji]
    counts = np.bincount(labels[near & mask].ravel())
    return labels == int(np.argmax(counts))


# ---- vertebral body: leaks into the neighbouring disc / vertebra ----------------------------------

def _cut_bridges(sitk, region, crop, sp, seed_kji, direction, centre, spread, lower, upper, params: _ModeParams):
    """Cut a vertebral body's leaks through endplate gaps and discs; returns the seed's part.

    ``centre`` and ``spread``: the statistics ball's robust intensity statistics."""
    near = _distance_mm(region.shape, sp, seed_kji) <= max(params.stats_radius_mm / 2, 2.0 * max(sp))
    if params.open_radius_mm > 0:
        # At least 2 voxels: a 1-voxel ball is a 6-neighbour cross whose opening only trims single
        # voxels, not the partial-volume bridges of a 3 mm scan (measured: CT L1 0.66 -> 0.99 inside).
        rad = [max(2, int(np.ceil(params.open_radius_mm / s - 1e-6))) for s in sp]
        opened = sitk.GetArrayFromImage(
            sitk.BinaryMorphologicalOpening(_as_sitk(sitk, region, sp), rad, sitk.sitkBall)) > 0
        core = _seed_component(sitk, opened, seed_kji, near=near)
        if core.any():
            # Take back the corners the opening rounded off, but only next to the kept part.
            grown = sitk.GetArrayFromImage(sitk.BinaryDilate(_as_sitk(sitk, core, sp), rad, sitk.sitkBall)) > 0
            region = grown & region
    if params.slab_cut > 0:
        region = _seed_component(sitk, _slab_cut(region, crop, seed_kji, direction, lower, upper,
                                                 params.slab_cut, spread), seed_kji, near=near)
    if params.partial_volume_layers > 0:
        region = _seed_component(sitk, _peel_partial_volume(region, crop, sp, seed_kji, centre, lower, upper,
                                                            params.partial_volume_layers), seed_kji, near=near)
    return region


def _slab_cut(region, crop, seed_kji, direction, lower, upper, frac, ball_spread):
    """Stop the region, on each side of the seed along the image axis nearest the patient's S axis,
    at the first slab whose median lies more than ``frac`` of the way from the body's median to the
    window's bound.

    A voxel window must admit marrow texture, so a disc's voxels (3 mm CT: marrow ~112, disc 67-80,
    window 59-157) pass it and the front grows through; a whole slab's median is far steadier.
    Measured against the region's median (T2 1.5 mm, MR and CT 3 mm samples): body slabs of more
    than 100 voxels stay within 0.36 of the half-window, a body's thin end slabs within 0.50, disc
    slabs lie at 0.52-0.69. Everything from the first such slab outwards is dropped.
    """
    if not region.any():  # nothing grew (a seed in a corner): the plausibility check says so
        return region
    ax = 2 - int(np.argmax(np.abs(np.asarray(direction, float)[2, :])))  # LPS z row -> numpy axis
    # The whole region's median: steadier than the seed ball's, which moves with the click (T2 C6,
    # click one voxel off: centre 72.2 -> 73.9, and a mid-body slab crossed 0.5, halving the body).
    centre, spread = _robust_stats(crop[region])
    # A statistics ball that straddles an endplate widens the window far more than the region's
    # spread: then a half-window counts at most _SLAB_SPREADS of the region's own spread.
    straddled = spread > 0 and ball_spread > _STRADDLE_RATIO * spread
    cap = _SLAB_SPREADS * spread if straddled else np.inf
    region = region.copy()
    for step in (1, -1):
        t = seed_kji[ax] + step
        while 0 <= t < region.shape[ax]:
            sl = [slice(None)] * 3
            sl[ax] = t
            inside = region[tuple(sl)]
            if not inside.any():
                break
            med = float(np.median(crop[tuple(sl)][inside]))
            half = min((upper - centre) if med >= centre else (centre - lower), cap)
            if half > 0 and abs(med - centre) > frac * half:
                sl[ax] = slice(t, None) if step > 0 else slice(0, t + 1)
                region[tuple(sl)] = False
                break
            t += step
    return region


# The 18 neighbour directions (faces and edges of the voxel), each with its opposite.
_DIRECTIONS = [tuple(v - 1 for v in o) for o in np.ndindex(3, 3, 3) if 0 < sum(abs(v - 1) for v in o) <= 2]


def _peel_partial_volume(region, crop, sp, seed_kji, centre, lower, upper, layers):
    """Peel the region's outer voxels that are partial-volume mixtures of other tissues, not body.

    On a 3 mm grid a voxel just beyond a thin cortex averages the cortex with the fat or muscle
    outside it and can look just like marrow, so the level set takes it in (measured on the 3 mm MR
    sample: such a rim was 16-19 % of the body mask, outside the vertebra label). Along a line
    through the voxel in any of the 18 neighbour directions, two signs give it away:

    - it lies between two tissues outside the window, dark on one side and bright on the other;
    - its neighbour towards the region is a thin line of another tissue, a dip (MR cortex) or a
      ridge (CT cortex) standing out by 3 noise units from both the voxel and the next voxel inwards.

    Only boundary voxels are peeled, at most ``layers`` times, so the body's own texture is never
    touched. Both tests need each voxel's value to be reliable: the crop is smoothed just enough
    for its noise to fall to half the window's narrower side (measured: none on the 3 mm MR and
    CT samples; 0.5-0.75 voxel on the noisy 1.5 mm T2, where raw values would peel marrow).
    """
    from scipy import ndimage

    dist = _distance_mm(crop.shape, sp, seed_kji)
    half = min(centre - lower, upper - centre)
    for sigma in (0.0, 0.5, 0.75, 1.0, 1.5, 2.0):
        values = ndimage.gaussian_filter(crop, sigma) if sigma else crop
        noise = _noise_floor(values, dist, sp)
        if noise <= 0.5 * half:
            break
    dark, bright = values < lower - 0.5 * noise, values > upper + 0.5 * noise
    between = np.zeros(crop.shape, bool)
    for o in _DIRECTIONS:
        between |= _shifted(dark, o) & _shifted(bright, tuple(-v for v in o))

    def beyond_thin_line(inside):
        found = np.zeros(crop.shape, bool)
        depth = 3.0 * noise
        for o in _DIRECTIONS:
            inner, inner2 = _shifted(values, o), _shifted(values, o, 2)
            dip = (inner < values - depth) & (inner < inner2 - depth) & (inner < lower)
            ridge = (inner > values + depth) & (inner > inner2 + depth) & (inner > upper)
            # Only where the line lies between the voxel and the seed: from the body's side, the
            # spill beyond the line is no reason to drop the body's own outer voxels.
            inward = (_shifted(dist, o) < dist) & (_shifted(dist, o, 2) < _shifted(dist, o))
            found |= (dip | ridge) & inward & _shifted(inside, o, 2)
        return found

    for _ in range(layers):
        edge = region & ~ndimage.binary_erosion(region, border_value=1)
        peel = edge & (between | beyond_thin_line(region))
        peel[seed_kji] = False
        if not peel.any():
            break
        region = region & ~peel
    return region


def _shifted(a: np.ndarray, offset, steps: int = 1) -> np.ndarray:
    """``a`` at ``v + steps * offset`` for every voxel ``v``; edge values repeat beyond the array
    (False for boolean masks)."""
    pad = np.pad(a, steps, mode="constant") if a.dtype == bool else np.pad(a, steps, mode="edge")
    return pad[tuple(slice(steps + steps * o, steps + steps * o + n) for o, n in zip(offset, a.shape))]
