"""The model registry: bundled models (shipped in the package) and user-installed ones.

``spineai/resources/models/registry.json`` lists the bundles the engine knows: id, version, url (a
path relative to that folder for bundled models, or file:// / http(s):// for downloads), sha256 of
the zip, description and demonstration flag. Installed bundles live in the user model folder
(``$SPINEAI_HOME/models``, default ``~/.spineai/models``) with their own ``installed.json``.
Nothing is fetched at import time; downloads resume (HTTP Range) and are verified before use.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

from spineai.errors import SpineAIError
from spineai.output import atomic_write, publish, user_mode, write_output_folder
from spineai.progress import report

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "resources" / "models"
BUNDLED_REGISTRY = BUNDLED_DIR / "registry.json"
INSTALLED_INDEX = "installed.json"


# Ids and versions become file names in the model folder: a strict pattern, checked before any path is
# built, keeps "../x", absolute paths and hidden names out.
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")


def check_model_name(model_id: str, version: str, source: str = "the bundle") -> None:
    for what, value, pattern in (("id", model_id, MODEL_ID_PATTERN), ("version", version, VERSION_PATTERN)):
        if not isinstance(value, str) or not pattern.match(value) or ".." in value:
            raise SpineAIError(f"{source}: model {what} {value!r} is not allowed: it must start with a letter or digit "
                               f"and hold only letters, digits, '.', '_' and '-' (no '..', no '/')")


def pinned_sha256s(registry: str | os.PathLike | None = None) -> set[str]:
    """sha256 of every bundle the package's registry lists: the only bundles that count as verified."""
    return {str(e["sha256"]).lower() for e in bundled_entries(registry)}


def user_model_dir() -> Path:
    home = os.environ.get("SPINEAI_HOME")
    return (Path(home) if home else Path.home() / ".spineai") / "models"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"models": []}
    except ValueError as exc:
        raise SpineAIError(f"registry {path} is not valid JSON: {exc}") from None
    if not isinstance(data.get("models"), list):
        raise SpineAIError(f"registry {path} has no 'models' list")
    return data


def bundled_entries(registry: str | os.PathLike | None = None) -> list[dict]:
    path = Path(registry) if registry else BUNDLED_REGISTRY
    out = []
    for e in _read_json(path)["models"]:
        missing = [k for k in ("id", "version", "url", "sha256") if k not in e]
        if missing:
            raise SpineAIError(f"registry {path}: entry {e.get('id', '?')} lacks {', '.join(missing)}")
        out.append({**e, "registry": str(path), "base": str(path.parent)})
    return out


def installed_entries() -> list[dict]:
    d = user_model_dir()
    return [{**e, "installed": True, "base": str(d)} for e in _read_json(d / INSTALLED_INDEX)["models"]]


def list_models(registry: str | os.PathLike | None = None) -> list[dict]:
    """Every known model: installed ones (``installed: True``, with their local ``path``) and the
    registry's, bundled or downloadable (``available_locally`` says whether it can load now)."""
    inst = installed_entries()
    have = {(e["id"], e["version"]) for e in inst}
    out = list(inst)
    for e in bundled_entries(registry):
        local = _local_path(e)
        out.append({**e, "installed": (e["id"], e["version"]) in have, "available_locally": local is not None and local.exists(),
                    "path": str(local) if local else None})
    for e in inst:
        e["available_locally"] = Path(e["path"]).exists()
    return out


def model_choices(task: str, models: list[dict]) -> list[tuple[str, str]]:
    """(id@version, label) of the ``models`` (``list_models()`` entries) for ``task``, labelled as a
    model picker shows them: demonstration models and ones not installed say so. An entry without a
    task is a radiomic classifier (the registry's first kind)."""
    out = []
    for e in models:
        if e.get("task", "classification") != task:
            continue
        label = f"{e['id']} {e['version']}"
        if e.get("demonstration"):
            label += " (demonstration)"
        if not e.get("available_locally", True):
            label += " (not installed)"
        out.append((f"{e['id']}@{e['version']}", label))
    return out


def _local_path(entry: dict) -> Path | None:
    url = entry["url"]
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    p = Path(url)
    return p if p.is_absolute() else Path(entry["base"]) / p


def resolve(model_id: str, registry: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """(local path, expected sha256) of a model id, ``id`` or ``id@version``; installed first."""
    mid, _, ver = model_id.partition("@")
    cands = [e for e in installed_entries() if e["id"] == mid and (not ver or e["version"] == ver)]
    if cands:
        e = sorted(cands, key=lambda e: _vkey(e["version"]))[-1]
        return Path(e["path"]), e.get("sha256")
    known = bundled_entries(registry)
    cands = [e for e in known if e["id"] == mid and (not ver or e["version"] == ver)]
    if not cands:
        ids = sorted({e["id"] for e in known} | {e["id"] for e in installed_entries()})
        raise SpineAIError(f"no model file or registry id {model_id!r}; known ids: {', '.join(ids) or 'none'}")
    e = sorted(cands, key=lambda e: _vkey(e["version"]))[-1]
    local = _local_path(e)
    if local is None or not local.exists():
        raise SpineAIError(f"model {model_id!r} is not installed: run `spineai models install {mid}` (downloads "
                           f"{e['url']}) or install it from a local file")
    return local, e["sha256"]


def _vkey(v: str):
    from spineai.models.bundle import parse_version

    return parse_version(v)


def download(url: str, dest: Path, expected_sha256: str | None = None, progress=None, chunk: int = 1 << 16,
             timeout: float = 30.0) -> Path:
    """Copy ``url`` (file://, http(s):// or a local path) to ``dest``, resuming a partial
    ``dest.part`` with an HTTP Range request, then verify the sha256. A mismatch deletes the
    partial file and raises."""
    from spineai.models.bundle import sha256_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        src = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(url)
        if not src.is_file():
            raise SpineAIError(f"model file {src} does not exist")
        total = src.stat().st_size
        with open(src, "rb") as fi, open(part, "wb") as fo:
            done = 0
            for block in iter(lambda: fi.read(chunk), b""):
                fo.write(block)
                done += len(block)
                report(progress, done, total, "copy")
    elif parsed.scheme in ("http", "https"):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # already complete
                resp = None
            else:
                raise SpineAIError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SpineAIError(f"download of {url} failed: {exc}; install from a local file instead") from None
        if resp is not None:
            with resp:
                resumed = resp.status == 206
                if not resumed:
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length else 0
                done = have
                try:
                    with open(part, "ab" if resumed else "wb") as fo:
                        while True:
                            block = resp.read(chunk)
                            if not block:
                                break
                            fo.write(block)
                            done += len(block)
                            report(progress, done, total, "download")
                except (OSError, http.client.HTTPException) as exc:
                    raise SpineAIError(f"download of {url} interrupted at {done} bytes ({exc}); run the same "
                                       f"command again to resume") from None
                if total and done < total:
                    raise SpineAIError(f"download of {url} interrupted at {done} of {total} bytes; run the same "
                                       f"command again to resume")
    else:
        raise SpineAIError(f"unsupported URL scheme {parsed.scheme!r} in {url}: use a file path, file:// or http(s)://")
    if expected_sha256:
        actual = sha256_file(part)
        if actual != expected_sha256.lower():
            part.unlink(missing_ok=True)
            raise SpineAIError(f"sha256 of {url} is {actual}, expected {expected_sha256}: the file is corrupt or not "
                               f"the one the registry lists; nothing was installed")
    os.replace(part, dest)
    return dest


def _verified_card(files: dict, source: str) -> dict:
    """The card of a bundle to install, after the checks its kind needs: a classifier is built from
    it (as loading will), a torch network's bundle has its manifest and files checked (building the
    network needs torch, which installing a file does not)."""
    from spineai.bundlefile import WEIGHTS, verify_files
    from spineai.models.bundle import bundle_from_files

    card = verify_files(files, source, {WEIGHTS, "booster.json"})
    if "network" in card:
        return verify_files(files, source, {WEIGHTS})
    return bundle_from_files(files, source).card


def install(source: str, sha256: str | None = None, registry: str | os.PathLike | None = None,
            overwrite: bool = False, progress=None) -> dict:
    """Install a bundle into the user model folder from a registry id, a local .zip / folder, or
    a URL. The bundle is verified (sha256 when known, manifest hashes, engine version) before it is
    listed; returns its installed entry."""
    from spineai.models.bundle import sha256_file

    entry = None
    if not Path(source).exists() and "://" not in source:
        mid, _, ver = source.partition("@")
        cands = [e for e in bundled_entries(registry) if e["id"] == mid and (not ver or e["version"] == ver)]
        if not cands:
            raise SpineAIError(f"{source!r} is neither a file, a URL nor a registry id")
        entry = sorted(cands, key=lambda e: _vkey(e["version"]))[-1]
        local = _local_path(entry)
        source = str(local) if local is not None else entry["url"]
        sha256 = sha256 or entry["sha256"]
    d = user_model_dir()
    d.mkdir(parents=True, exist_ok=True)
    if Path(source).is_dir():
        from spineai.bundlefile import read_files, sha256_bytes, MANIFEST

        files = read_files(Path(source))
        card = _verified_card(files, source)
        mid, version = card.get("id") or Path(source).name, card.get("version") or "0"
        check_model_name(mid, version, source)
        target = d / f"{mid}-{version}"
        if target.exists() and not overwrite:
            raise SpineAIError(f"{target} is already installed; pass --overwrite to replace it")

        def copy(folder: Path) -> None:
            for name, data in files.items():
                (folder / name).write_bytes(data)

        write_output_folder(target, copy, overwrite=True)
        digest = sha256_bytes(files[MANIFEST])
    else:
        # Named after the source, so that a download cut short resumes when the command is run again.
        staging = d / f".download-{hashlib.sha256(source.encode()).hexdigest()[:16]}.zip"
        try:
            download(source, staging, sha256, progress)
            from spineai.bundlefile import read_files

            card = _verified_card(read_files(staging), source)
            mid, version = card.get("id") or "model", card.get("version") or "0"
            check_model_name(mid, version, source)
            target = d / f"{mid}-{version}.zip"
            if target.exists() and not overwrite:
                raise SpineAIError(f"{target} is already installed; pass --overwrite to replace it")
            digest = sha256_file(staging)
            os.chmod(staging, user_mode())
            publish(staging, target, overwrite)
        finally:
            staging.unlink(missing_ok=True)
    e = {"id": mid, "version": version, "path": str(target), "sha256": digest, "task": card.get("task", "classification"),
         "description": card.get("description", ""), "demonstration": bool(card.get("demonstration", False)),
         "feature_definition": card.get("features", {}).get("definition", ""), "source": source}
    index = _read_json(d / INSTALLED_INDEX)
    index["models"] = [m for m in index["models"] if not (m["id"] == e["id"] and m["version"] == e["version"])] + [e]
    atomic_write(d / INSTALLED_INDEX, lambda tmp: tmp.write_text(json.dumps(index, indent=2), encoding="utf-8"),
                 suffix=".json", overwrite=True)
    return e
