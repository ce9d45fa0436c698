"""The bundle file format shared by every SpineAI model (radiomic classifiers and torch networks).

A bundle is a folder or a ``.zip`` holding ``model.json`` (the card), weights in safe formats and
``manifest.json`` (the sha256 of every other file). This module knows only files and hashes; what
the card means is decided by ``spineai.models.bundle`` (radiomic models) and ``spineai.deep.bundle``
(torch networks). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Mapping

import spineai
from spineai.errors import SpineAIError
from spineai.output import atomic_write, refuse_existing, write_output_folder

BUNDLE_FORMAT = "spineai-model-bundle"
BUNDLE_FORMAT_VERSION = 1
CARD = "model.json"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BOOSTER = "booster.json"
# Every file name a bundle of any kind may hold; each kind of bundle allows a subset (verify_files).
KNOWN_FILES = {CARD, MANIFEST, WEIGHTS, BOOSTER}
# A bundle holds a card, a manifest and weights: small. These limits refuse a zip bomb from its
# directory alone, before anything is decompressed; reading is capped as well.
MAX_BUNDLE_BYTES = 512 << 20
MAX_RATIO = 200
# A fixed timestamp makes a zip's bytes (and so its sha256) depend on the content only.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for p in str(text).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def pack_files(card: dict, payload: Mapping[str, bytes]) -> dict[str, bytes]:
    """The card and payload files plus their manifest, ready to write."""
    files = {CARD: json.dumps(card, indent=2, allow_nan=False).encode(), **payload}
    manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "files": {name: sha256_bytes(data) for name, data in sorted(files.items())}}
    files[MANIFEST] = json.dumps(manifest, indent=2).encode()
    return files


def write_files(files: Mapping[str, bytes], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a bundle: a ``.zip`` file when the path ends so, else a folder. Atomic and verified: a
    failure leaves nothing behind, and an existing path is refused unless ``overwrite``."""
    path = refuse_existing(path, overwrite)

    def write_folder(folder: Path) -> None:
        for name, data in files.items():
            (folder / name).write_bytes(data)

    if path.suffix.lower() != ".zip":
        return write_output_folder(path, write_folder, overwrite)
    if path.is_dir():
        raise SpineAIError(f"{path} is a folder; a .zip bundle needs a file name")

    def write_zip(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, _ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[name])

    def same_as_written(tmp: Path) -> None:
        if read_files(tmp) != dict(files):
            raise ValueError("the bundle read back differs from the one written")

    return atomic_write(path, write_zip, suffix=".zip", overwrite=overwrite, verify=same_as_written)


def read_files(path: Path) -> dict[str, bytes]:
    path = Path(path)
    if path.is_dir():
        found = {p.name: p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
        total = sum(p.stat().st_size for p in found.values())
        if total > MAX_BUNDLE_BYTES:
            raise SpineAIError(f"{path}: {total} bytes is too large for a model bundle (at most {MAX_BUNDLE_BYTES})")
        return {n: p.read_bytes() for n, p in found.items()}
    if not path.is_file():
        raise SpineAIError(f"model bundle {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_zip_directory(path, infos)
            return {i.filename: _read_member(zf, i, path) for i in infos}
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise SpineAIError(f"{path} is not a readable model bundle: a damaged zip file or not a zip at all "
                           f"({exc})") from None


def _check_zip_directory(path: Path, infos) -> None:
    names = [i.filename for i in infos]
    odd = sorted(n for n in names if n not in KNOWN_FILES)
    if odd or len(set(names)) != len(names):
        raise SpineAIError(f"{path}: unexpected entries inside the bundle: {', '.join(odd) or 'duplicate names'}")
    total = sum(i.file_size for i in infos)
    if total > MAX_BUNDLE_BYTES:
        raise SpineAIError(f"{path}: its files would unpack to {total} bytes, too large for a model bundle "
                           f"(at most {MAX_BUNDLE_BYTES}); refusing to unpack it")
    for i in infos:
        if i.file_size > MAX_RATIO * max(i.compress_size, 1) and i.file_size > 1 << 20:
            raise SpineAIError(f"{path}: {i.filename} would unpack {i.file_size / max(i.compress_size, 1):.0f} times "
                               f"larger than stored (a zip bomb?); refusing to unpack it")


def _read_member(zf: zipfile.ZipFile, info, path: Path) -> bytes:
    """Decompress one member, stopping at its declared size (a lying header cannot exceed it)."""
    out, left = [], info.file_size
    with zf.open(info) as fh:
        while True:
            block = fh.read(min(1 << 20, left + 1))
            if not block:
                break
            left -= len(block)
            if left < 0:
                raise SpineAIError(f"{path}: {info.filename} unpacks to more than its declared size; refusing it")
            out.append(block)
    return b"".join(out)


def verify_files(files: Mapping[str, bytes], source: str, allowed: Iterable[str]) -> dict:
    """Check the manifest (format, completeness, every sha256) and the engine version; return the card."""
    if MANIFEST not in files:
        raise SpineAIError(f"{source} is not a SpineAI model bundle: no {MANIFEST}")
    try:
        manifest = json.loads(files[MANIFEST])
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise SpineAIError(f"{source}: {MANIFEST} is not a valid bundle manifest") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise SpineAIError(f"{source}: unknown bundle format {manifest.get('format')!r}")
    if int(manifest.get("format_version", 0)) > BUNDLE_FORMAT_VERSION:
        raise SpineAIError(f"{source}: bundle format {manifest.get('format_version')} is newer than this engine reads "
                           f"({BUNDLE_FORMAT_VERSION}); update SpineAI")
    present = set(files) - {MANIFEST}
    unlisted = sorted(present - set(listed))
    missing = sorted(set(listed) - present)
    if unlisted or missing:
        raise SpineAIError(f"{source}: bundle contents do not match its manifest (tampered or incomplete): "
                           f"unlisted files {unlisted or 'none'}, missing files {missing or 'none'}")
    unknown = sorted(set(listed) - set(allowed) - {CARD})
    if unknown:
        raise SpineAIError(f"{source}: unexpected files in the bundle: {', '.join(unknown)}")
    bad = [n for n, h in listed.items() if sha256_bytes(files[n]) != h]
    if bad:
        raise SpineAIError(f"{source}: sha256 mismatch for {', '.join(sorted(bad))}: the bundle was modified "
                           f"after it was saved (tampered or corrupt); refusing to load it")
    try:
        card = json.loads(files[CARD])
    except ValueError:
        raise SpineAIError(f"{source}: {CARD} is not valid JSON") from None
    if not isinstance(card, dict):
        raise SpineAIError(f"{source}: {CARD} is not a model card (a JSON object)")
    engine = card.get("engine_version", "0")
    if parse_version(engine) > parse_version(spineai.__version__):
        raise SpineAIError(f"{source} was made by SpineAI {engine}, newer than this engine ({spineai.__version__}); "
                           f"update SpineAI to use it")
    return card


def read_bundle(path_or_id: str | os.PathLike, registry=None) -> tuple[dict[str, bytes], str, str, bool]:
    """The files of a bundle folder, .zip or registry id (installed or bundled).

    A registry id's pinned sha256 is checked against the zip file (or a folder's manifest) first.
    Returns (files, source, sha256, verified): ``verified`` is True only for a bundle whose sha256
    the package's registry pins; any other bundle (a file given by path, an edited card with a
    recomputed manifest) is unverified, whatever its manifest says."""
    from spineai.models import registry as reg

    p = Path(path_or_id)
    if p.exists():
        entry_path, expected = p, None
    else:
        entry_path, expected = reg.resolve(str(path_or_id), registry)
    files = read_files(entry_path)
    actual = sha256_file(entry_path) if entry_path.is_file() else sha256_bytes(files.get(MANIFEST, b""))
    if expected and actual != expected:
        raise SpineAIError(f"model {path_or_id!r} at {entry_path}: sha256 {actual} does not match the registry's "
                           f"{expected} (tampered or corrupt)")
    return files, str(entry_path), actual, actual in reg.pinned_sha256s(registry)
