"""Volumes as plain values: a voxel array plus the geometry that places it in patient space.

Conventions (those of ITK / SimpleITK, so that no axis is ever flipped by accident):
- ``array`` is indexed ``[k, j, i]`` (slice, row, column), as ``sitk.GetArrayFromImage`` and
  Slicer's ``slicer.util.arrayFromVolume`` both return it.
- ``spacing`` is ``(i, j, k)`` in millimetres; ``origin`` is the centre of voxel (0, 0, 0) and
  ``direction`` the 3x3 matrix whose columns are the i, j, k axes, both in LPS like ITK.
- Points that users give (Slicer markups, ``--seed``) are RAS, like Slicer: ``ras_to_ijk`` and
  ``ijk_to_ras`` convert. RAS = LPS with the first two coordinates negated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.output import atomic_write, check_output_path, refuse_existing  # noqa: F401 (the writers' home)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# Extensions SimpleITK writes that keep full 3D geometry.
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scalar image: ``array[k, j, i]`` with ITK geometry (LPS)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise SpineAIError(
                f"expected a 3D volume, got an array with {arr.ndim} dimension(s) of shape {arr.shape}"
            )
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise SpineAIError(f"voxel spacing must be three positive numbers, got {self.spacing}")
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise SpineAIError(f"origin must be three finite numbers, got {self.origin}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
            raise SpineAIError(f"direction must be a rotation (|det| = 1), got {direction.tolist()}")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def size_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return (i, j, k)

    def ijk_to_lps_matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """The 4x4 matrix Slicer calls IJKToRAS."""
        m = self.ijk_to_lps_matrix()
        m[:3, :] = _LPS_TO_RAS @ m[:3, :]
        return m

    def ijk_to_ras(self, ijk: Sequence[float]) -> np.ndarray:
        return (self.ijk_to_ras_matrix() @ np.append(np.asarray(ijk, float), 1.0))[:3]

    def ras_to_ijk(self, ras: Sequence[float]) -> np.ndarray:
        """Continuous voxel index (i, j, k) of a RAS point."""
        return (np.linalg.inv(self.ijk_to_ras_matrix()) @ np.append(np.asarray(ras, float), 1.0))[:3]

    def contains_ijk(self, ijk: Sequence[float]) -> bool:
        """Whether a continuous index lies inside the voxel grid (voxel centres at integers)."""
        ijk = np.asarray(ijk, float)
        return bool(np.all(ijk >= -0.5) and np.all(ijk < np.asarray(self.size_ijk) - 0.5))

    def same_geometry(self, other: "Volume", tol: float = 1e-4) -> bool:
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=tol, atol=tol * max(self.spacing))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new volume with this one's geometry and another voxel array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise SpineAIError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def geometry_summary(self) -> str:
        return (
            f"size {self.size_ijk} voxels, spacing {tuple(round(s, 4) for s in self.spacing)} mm, "
            f"origin {tuple(round(o, 3) for o in self.origin)} (LPS)"
        )

    # ---- SimpleITK --------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image) -> "Volume":
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise SpineAIError(f"expected a 3D image, got a {image.GetDimension()}D image of size {image.GetSize()}")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise SpineAIError(
                f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel "
                "(a vector, RGB or multi-echo volume): extract one component first"
            )
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection()).reshape(3, 3),
        )

    def to_sitk(self):
        import SimpleITK as sitk

        arr = self.array
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image


# ---- validation used by every step --------------------------------------------------------

def require_finite(volume: Volume, what: str = "image") -> None:
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = ~np.isfinite(volume.array)
        if bad.any():
            k, j, i = np.argwhere(bad)[0]
            raise SpineAIError(
                f"the {what} has {int(bad.sum())} NaN or infinite voxel(s), the first at voxel (i, j, k) = "
                f"({i}, {j}, {k}): fill or mask them before segmenting or extracting features"
            )


def require_not_mask(image: Volume, what: str = "image") -> None:
    """Refuse an 'image' with at most two voxel values: that is a mask (image and mask swapped?)."""
    arr = image.array
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise SpineAIError(f"the {what} is constant (every voxel is {lo:g}): there is nothing to measure")
    if np.all((arr == lo) | (arr == hi)):
        raise SpineAIError(
            f"the {what} holds only the values {lo:g} and {hi:g}: it is a mask, not a scan; were the image "
            f"and the mask given in the wrong order? (the image comes first)"
        )


def require_same_geometry(a: Volume, b: Volume, what_a: str = "image", what_b: str = "mask") -> None:
    if not a.same_geometry(b):
        raise SpineAIError(
            f"the {what_b} does not have the {what_a}'s geometry: {what_a} has {a.geometry_summary()}; "
            f"{what_b} has {b.geometry_summary()}. Resample the {what_b} onto the {what_a} first"
        )


def seed_to_index(volume: Volume, seed: Sequence[float], space: str = "ras") -> tuple[int, int, int]:
    """The voxel (i, j, k) holding a seed given in RAS millimetres (``space='ras'``) or as indices."""
    seed = np.asarray(seed, dtype=float)
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise SpineAIError(f"a seed needs three finite coordinates, got {list(np.atleast_1d(seed))}")
    if space == "ras":
        ijk = volume.ras_to_ijk(seed)
        where = f"RAS ({seed[0]:.1f}, {seed[1]:.1f}, {seed[2]:.1f}) mm (voxel index {np.round(ijk, 1).tolist()})"
    elif space == "ijk":
        ijk = seed
        where = f"voxel index {seed.tolist()}"
    else:
        raise SpineAIError(f"seed space must be 'ras' or 'ijk', got {space!r}")
    if not volume.contains_ijk(ijk):
        raise SpineAIError(
            f"the seed at {where} lies outside the image ({volume.size_ijk} voxels, index 0..size-1)"
        )
    i, j, k = (int(v) for v in np.clip(np.round(ijk), 0, np.asarray(volume.size_ijk) - 1))
    return (i, j, k)


# ---- files --------------------------------------------------------------------------------

def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(ext) for ext in VOLUME_EXTENSIONS)


def read_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file, or a folder holding one DICOM series."""
    try:
        import SimpleITK as sitk
    except ImportError:  # e.g. a bare GPU training machine: NIfTI still reads, through nibabel
        sitk = None

    path = Path(path)
    if not path.exists():
        raise SpineAIError(f"no such file or folder: {path}")
    nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    if sitk is None and not (nifti and path.is_file()):
        raise SpineAIError(f"reading {path} needs SimpleITK (pip install SimpleITK); without it only NIfTI files can be read")
    if path.is_dir():
        return _read_dicom_series(path, series_uid)
    if nifti:
        _check_nifti(path)
        if sitk is None:
            return _read_nifti_nibabel(path)
    elif path.name.lower().endswith(".gz"):
        _check_gzip(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise SpineAIError(f"cannot read {path} as an image ({first})") from None
    return Volume.from_sitk(image)


def _read_nifti_nibabel(path: Path) -> Volume:
    """NIfTI through nibabel, in SimpleITK's conventions (LPS geometry, ``array[k, j, i]``, the
    stored voxel type). Only used where SimpleITK is missing; the tests check that both agree."""
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asanyarray(img.dataobj)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)), tuple(spacing), tuple(lps[:3, 3]),
                  lps[:3, :3] / spacing)


def _check_gzip(path: Path) -> None:
    """Decompress the whole file once: a truncated or damaged gzip fails its length / CRC check
    (SimpleITK would read the missing part as zeros)."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise SpineAIError(f"cannot read {path} as an image: the file is truncated or corrupt ({exc}); "
                           f"copy it again from its source") from None


def _check_nifti(path: Path) -> None:
    """What SimpleITK reads silently wrong in a NIfTI file: a truncated file (missing voxels read as
    zeros), NaN / infinite voxels (read as 0) and a zero voxel size (read as 1 mm)."""
    import nibabel as nib

    if path.name.lower().endswith(".gz"):
        _check_gzip(path)
    pixdim = _raw_pixdim(path)
    zero = [ax for ax, v in zip("ijk", pixdim) if v == 0 or not np.isfinite(v)]
    if zero:
        raise SpineAIError(f"{path}: the NIfTI header gives no voxel size along {', '.join(zero)} (pixdim "
                           f"{pixdim}); SimpleITK would silently use 1 mm. Fix the header's pixdim")
    try:
        raw = np.asarray(nib.load(str(path)).dataobj.get_unscaled())
    except Exception as exc:  # nibabel raises many kinds for a damaged file
        raise SpineAIError(f"cannot read {path} as an image: the NIfTI file is truncated or corrupt ({exc})") from None
    if np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.complexfloating):
        bad = ~np.isfinite(raw)
        if bad.any():
            first = tuple(int(v) for v in np.argwhere(bad)[0][:3])
            raise SpineAIError(f"{path} has {int(bad.sum())} NaN or infinite voxel(s), the first at voxel "
                               f"(i, j, k) = {first}: fill or mask them before segmenting or extracting features")


def _raw_pixdim(path: Path) -> list[float]:
    """The spatial pixdim as stored: nibabel's loader replaces zeros by 1 (as SimpleITK does)."""
    import gzip
    import struct

    with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as fh:
        head = fh.read(540)
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            dim, pixdim = struct.unpack(order + "8h", head[40:56]), struct.unpack(order + "8f", head[76:108])
        elif size == 540 and len(head) >= 540:
            dim, pixdim = struct.unpack(order + "8q", head[16:80]), struct.unpack(order + "8d", head[104:168])
        else:
            continue
        return [float(v) for v in pixdim[1 : 1 + max(0, min(3, int(dim[0])))]]
    raise SpineAIError(f"cannot read {path} as an image: the NIfTI header is truncated or corrupt")


def _read_dicom_series(folder: Path, series_uid: str | None) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    uids = list(reader.GetGDCMSeriesIDs(str(folder)) or [])
    if not uids:
        raise SpineAIError(f"{folder} holds no readable DICOM series (no file with a DICOM series UID)")
    if series_uid is None:
        if len(uids) > 1:
            raise SpineAIError(
                f"{folder} holds {len(uids)} DICOM series; choose one: " + ", ".join(uids)
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise SpineAIError(f"series {series_uid} is not in {folder}; it holds: " + ", ".join(uids))
    files = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    _check_series_slices(folder, series_uid, files, uids)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise SpineAIError(f"cannot read the DICOM series {series_uid} in {folder} ({first})") from None
    if image.GetDimension() == 3 and image.GetSize()[2] < 2:
        raise SpineAIError(f"the DICOM series in {folder} has a single slice: a 3D volume needs several")
    return Volume.from_sitk(image)


_UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def _check_series_slices(folder: Path, series_uid: str, files, all_uids) -> None:
    """Refuse a series with an unreadable slice, a slice cut short, or a gap / uneven spacing
    (a missing or rejected slice): SimpleITK would stretch the volume over the gap silently."""
    import pydicom

    def names(paths):
        paths = list(paths)
        return ", ".join(Path(p).name for p in paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")

    unreadable, short, where = [], [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # pydicom raises many kinds for a damaged file
            unreadable.append(f)
            continue
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if "PixelData" in ds and syntax in _UNCOMPRESSED_SYNTAXES:
            need = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * \
                int(ds.BitsAllocated) // 8 * int(getattr(ds, "NumberOfFrames", 1) or 1)
            if len(ds.PixelData) < need:
                short.append(f)
        pos, ori = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
        if pos is not None and ori is not None and len(pos) == 3 and len(ori) == 6:
            normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
            where.append((float(np.dot(normal, np.asarray(pos, float))), f))
    if unreadable or short:
        raise SpineAIError(f"the DICOM series {series_uid} in {folder} has damaged slice file(s): "
                           + "; ".join(t for t in (unreadable and f"unreadable: {names(unreadable)}",
                                                    short and f"pixel data cut short: {names(short)}") if t))
    if len(where) != len(files) or len(where) < 3:
        return  # no positions to check (or too few slices to define a spacing)
    where.sort()
    gaps = np.diff([w for w, _ in where])
    step = float(np.median(gaps))
    odd = [n for n, g in enumerate(gaps) if abs(g - step) > max(0.01, 0.02 * abs(step))]
    if step == 0 or odd:
        n = odd[0] if odd else 0
        listed = {os.path.abspath(f) for u in all_uids for f in _series_files(folder, u)}
        strays = [p for p in sorted(folder.iterdir()) if p.is_file() and os.path.abspath(p) not in listed]
        raise SpineAIError(
            f"the DICOM series {series_uid} in {folder} has uneven slice spacing: {gaps[n]:.3f} mm between "
            f"{Path(where[n][1]).name} and {Path(where[n + 1][1]).name} where the other slices are {step:.3f} mm "
            f"apart ({len(odd)} irregular gap(s)); a slice is missing or unreadable"
            + (f"; files in the folder outside any readable series: {names(strays)}" if strays else ""))


def _series_files(folder: Path, uid: str) -> list[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a volume; the file is read back and compared voxel by voxel before it replaces anything."""
    import SimpleITK as sitk

    path = Path(path)
    if not _is_volume_file(path):
        raise SpineAIError(f"unknown volume format for {path}: use one of {', '.join(VOLUME_EXTENSIONS)}")
    path = check_output_path(path, overwrite)
    image = volume.to_sitk()
    ext = next(e for e in VOLUME_EXTENSIONS if path.name.lower().endswith(e))

    def same_as_written(tmp: Path) -> None:
        back = read_volume(tmp)
        want = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
        if back.array.shape != want.shape or not np.array_equal(back.array, want):
            raise ValueError("the voxels read back differ from those written")

    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), suffix=ext,
                 overwrite=overwrite, verify=same_as_written)
    return path


def mask_from_labelmap(labels: Volume, label: int | Iterable[int] | None = None, what: str = "mask") -> np.ndarray:
    """Boolean array of the voxels carrying ``label`` (any non-zero voxel when ``label`` is None)."""
    arr = labels.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise SpineAIError(f"the {what} contains NaN or infinite values")
        fractional = arr != np.round(arr)
        if fractional.any():
            raise SpineAIError(
                f"the {what} has {int(fractional.sum())} voxel(s) with fractional values (e.g. "
                f"{float(arr[fractional].flat[0]):g}), as a resampled or probability map has: a {what} must hold "
                f"whole-number labels and SpineAI does not guess a threshold; threshold it first (e.g. >= 0.5)"
            )
    if label is None:
        mask = arr != 0
        if not mask.any():
            raise SpineAIError(f"the {what} is empty: no voxel is non-zero")
        return mask
    wanted = [int(label)] if np.isscalar(label) else [int(v) for v in label]
    mask = np.isin(arr, wanted)
    if not mask.any():
        present = np.unique(arr)
        present = present[present != 0]
        shown = ", ".join(str(int(v)) for v in present[:20]) + (" ..." if present.size > 20 else "")
        raise SpineAIError(
            f"label {wanted[0] if len(wanted) == 1 else wanted} is absent from the {what}; "
            f"labels present: {shown or 'none (the ' + what + ' is empty)'}"
        )
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (non-zero = inside); 1.0 when both are empty."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
