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
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import spineai
from spineai.errors import SpineAIError
from spineai.image import refuse_existing

BUNDLE_FORMAT = "spineai-model-bundle"
BUNDLE_FORMAT_VERSION = 1
CARD = "model.json"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
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
    """Write a bundle: a ``.zip`` file when the path ends so, else a folder. Atomic: a failure leaves
    nothing behind, and an existing path is refused unless ``overwrite``."""
    path = refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".zip":
        fd, tmp = tempfile.mkstemp(prefix=".spineai-", suffix=".zip", dir=path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, _ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name])
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a bundle is meant to be shared
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        tmpdir = Path(tempfile.mkdtemp(prefix=".spineai-", dir=path.parent))
        try:
            for name, data in files.items():
                (tmpdir / name).write_bytes(data)
            os.chmod(tmpdir, 0o755)
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmpdir, path)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    return path


def read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
    if not path.is_file():
        raise SpineAIError(f"model bundle {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any("/" in n or n.startswith(".") for n in names):
                raise SpineAIError(f"{path}: unexpected paths inside the bundle: {', '.join(n for n in names if '/' in n)}")
            return {n: zf.read(n) for n in names}
    except zipfile.BadZipFile:
        raise SpineAIError(f"{path} is neither a model bundle folder nor a zip file") from None


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


def read_bundle(path_or_id: str | os.PathLike, registry=None) -> tuple[dict[str, bytes], str, str | None]:
    """The files of a bundle folder, .zip or registry id (installed or bundled), with its source and
    the registry's pinned sha256 checked against the zip file (or a folder's manifest) first.

    Returns (files, source, pinned sha256 or None when the bundle was given as a path)."""
    p = Path(path_or_id)
    if p.exists():
        return read_files(p), str(p), None
    from spineai.models import registry as reg

    entry_path, expected = reg.resolve(str(path_or_id), registry)
    files = read_files(entry_path)
    actual = sha256_file(entry_path) if entry_path.is_file() else sha256_bytes(files.get(MANIFEST, b""))
    if expected and actual != expected:
        raise SpineAIError(f"model {path_or_id!r} at {entry_path}: sha256 {actual} does not match the registry's "
                           f"{expected} (tampered or corrupt)")
    return files, str(entry_path), expected
