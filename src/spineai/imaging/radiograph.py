"""Frontal radiographs as plain values: read from DICOM, PNG / JPEG or NIfTI / NRRD into a one-slice
:class:`~spineai.image.Volume` (the way Slicer holds a 2D image), with bright = dense whatever the
file's photometric convention."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.imaging.radiograph_synth import FRONTAL_DIRECTION

PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def radiograph_plane(volume: Volume, what: str = "radiograph") -> np.ndarray:
    """The film as a float32 2D array (rows, columns), row 0 at the top of the volume's grid."""
    arr = np.asarray(volume.array)
    planes = [n for n in arr.shape if n > 1]
    if len(planes) != 2:
        raise SpineAIError(f"the {what} must be a 2D image (one slice), got a volume of {volume.size_ijk} voxels")
    plane = arr[0] if arr.shape[0] == 1 else arr[:, 0, :] if arr.shape[1] == 1 else arr[:, :, 0]
    plane = plane.astype(np.float32)
    if not np.isfinite(plane).all():
        raise SpineAIError(f"the {what} holds NaN or infinite pixels")
    if float(plane.max() - plane.min()) == 0:
        raise SpineAIError(f"the {what} is blank (every pixel has the value {float(plane.flat[0])})")
    return plane


def read_radiograph(path: str | os.PathLike) -> Volume:
    """A radiograph file as a one-slice volume: DICOM (one file; MONOCHROME1 inverted so that bone is
    bright; rescale slope / intercept applied; pixel spacing from ImagerPixelSpacing or PixelSpacing),
    a picture (PNG, JPEG, TIFF, BMP; colour converted to grey; 1 mm pixels) or NIfTI / NRRD / MetaImage
    (its own geometry; 2D or one slice)."""
    path = Path(path)
    if not path.exists():
        raise SpineAIError(f"no such file: {path}")
    if path.is_dir():
        raise SpineAIError(f"{path} is a folder: give the radiograph's file (one DICOM file, a PNG or a NIfTI)")
    name = path.name.lower()
    if name.endswith(PICTURE_EXTENSIONS):
        volume = _read_picture(path)
    elif _is_dicom(path):
        volume = _read_dicom(path)
    else:
        volume = _read_itk(path)
    radiograph_plane(volume, f"radiograph {path.name}")
    return volume


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM" or path.name.lower().endswith((".dcm", ".dicom"))


def _read_dicom(path: Path) -> Volume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise SpineAIError(f"cannot read {path} as DICOM ({exc})") from None
    if "PixelData" not in ds:
        raise SpineAIError(f"{path} is a DICOM file without an image (no Pixel Data): a report or structured document?")
    try:
        pixels = np.asarray(ds.pixel_array, np.float32)
    except Exception as exc:  # pydicom raises many kinds when a decoder is missing or the data are damaged
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise SpineAIError(f"cannot decode the pixels of {path} (transfer syntax {name}): {exc}") from None
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise SpineAIError(f"{path} is a colour DICOM image ({ds.SamplesPerPixel} samples per pixel); a radiograph is greyscale")
    if pixels.ndim == 3:
        if pixels.shape[0] != 1:
            raise SpineAIError(f"{path} holds {pixels.shape[0]} frames: a radiograph is one frame")
        pixels = pixels[0]
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "MONOCHROME1":  # stored with bone dark: invert within the stored range
        pixels = float(pixels.max()) + float(pixels.min()) - pixels
    elif photometric != "MONOCHROME2":
        raise SpineAIError(f"{path} has photometric interpretation {photometric}: a radiograph is MONOCHROME1 or 2")
    spacing = getattr(ds, "ImagerPixelSpacing", None) or getattr(ds, "PixelSpacing", None) or (1.0, 1.0)
    try:
        row_mm, col_mm = (float(v) for v in spacing)
    except (TypeError, ValueError):
        raise SpineAIError(f"{path}: the pixel spacing {spacing!r} is not two numbers") from None
    if min(row_mm, col_mm) <= 0:
        raise SpineAIError(f"{path}: the pixel spacing {spacing!r} is not positive")
    return Volume(pixels[None], (col_mm, row_mm, 1.0), (0.0, 0.0, 0.0), FRONTAL_DIRECTION)


def _read_picture(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise SpineAIError(f"cannot read {path} as a picture ({str(exc).strip().splitlines()[-1]})") from None
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:  # RGB(A): luminance of the colour channels
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise SpineAIError(f"{path} is not a 2D picture (array shape {arr.shape})")
    return Volume(arr[None], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), FRONTAL_DIRECTION)


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    from spineai.image import read_volume

    try:
        info = sitk.ImageFileReader()
        info.SetFileName(str(path))
        info.ReadImageInformation()
        dims = info.GetDimension()
    except RuntimeError:
        raise SpineAIError(f"cannot read {path}: not a DICOM, picture, NIfTI, NRRD or MetaImage file") from None
    if dims == 3:
        return read_volume(path)
    if dims != 2:
        raise SpineAIError(f"{path} is a {dims}D image; a radiograph is 2D")
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SpineAIError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per pixel; a radiograph is greyscale")
    d2 = np.asarray(image.GetDirection()).reshape(2, 2)
    direction = np.eye(3)
    direction[:2, :2] = d2
    sx, sy = image.GetSpacing()
    ox, oy = image.GetOrigin()
    return Volume(sitk.GetArrayFromImage(image).astype(np.float32)[None], (sx, sy, 1.0), (ox, oy, 0.0), direction)
