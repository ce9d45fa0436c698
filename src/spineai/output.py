"""Writing outputs without ever losing what the user has.

Every file SpineAI writes goes through ``atomic_write``: written to a hidden temporary file in the
target folder, flushed, verified (not empty, and read back: volumes, CSV, JSON, zip, PNG, HTML),
given the user's umask, then moved into place. Without ``overwrite`` the move is exclusive (a hard
link fails when the name exists), so two runs started together cannot both succeed with one result
silently lost. A write the disk cut short (SimpleITK only prints "wrote only ..." on a full disk)
fails verification and leaves the original untouched.

A folder output (reports, bundle folders) carries a marker, ``.spineai-outputs.json``, listing the
files SpineAI wrote there. ``overwrite`` replaces only those; a folder holding anything else is
refused, so ``--out .`` can never empty a directory. No output may be one of the inputs.

Temporary names carry the writer's host and pid; those left by a killed run are removed by the next
write into the same folder (once their process is gone, or after an hour).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from spineai.errors import SpineAIError

TEMP_PREFIX = ".spineai-"
OUTPUT_MARKER = ".spineai-outputs.json"
STALE_SECONDS = 3600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\.spineai-tmp-([0-9a-f]{8})-(\d+)-")


def temp_prefix() -> str:
    return f"{TEMP_PREFIX}tmp-{_HOST}-{os.getpid()}-"


def user_mode(directory: bool = False) -> int:
    """Permission bits a plain ``open`` / ``mkdir`` would give under the user's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove hidden temporaries that killed SpineAI runs left in ``folder``; returns them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        name = p.name
        if not name.startswith(TEMP_PREFIX) or name == OUTPUT_MARKER:
            continue
        m = _TEMP_NAME.match(name)
        try:
            age = now - p.lstat().st_mtime
        except OSError:
            continue
        dead = m is not None and m.group(1) == _HOST and not _pid_alive(int(m.group(2)))
        if not (dead or age > STALE_SECONDS):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


# ---- checks made before any work ------------------------------------------------------------

def refuse_input_as_output(out: str | os.PathLike, inputs: Iterable) -> None:
    """Refuse an output that is one of the inputs, or a folder output holding one (even with
    ``--overwrite``: the input is being read to make the output)."""
    out = Path(out)
    try:
        out_real = out.resolve()
    except OSError:
        return
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        if not inp.exists():
            continue
        same = out.exists() and os.path.samefile(out, inp)
        inside = out.is_dir() and out_real in inp.resolve().parents
        if same or inside:
            raise SpineAIError(f"the output {out} {'is' if same else 'holds'} the input {inp}: "
                               f"choose another output so the input is not replaced")


def _foreign_files(folder: Path) -> list[str]:
    """Names in ``folder`` that SpineAI's marker does not list (temporaries of SpineAI aside)."""
    listed = set(_read_marker(folder))
    return sorted(p.name for p in folder.iterdir()
                  if p.name != OUTPUT_MARKER and p.name not in listed and not _TEMP_NAME.match(p.name))


def _read_marker(folder: Path) -> list[str]:
    try:
        data = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
        files = data["files"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SpineAIError(f"{folder / OUTPUT_MARKER} is damaged: SpineAI cannot tell which files in {folder} it "
                           f"wrote; remove the folder yourself or choose another output") from None
    return [f for f in files if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")]


def refuse_existing(path: str | os.PathLike, overwrite: bool = False, inputs: Iterable = ()) -> Path:
    """Refuse to replace a file or folder the user already has unless they said so; a folder is
    replaced only when everything in it is something SpineAI wrote there (its marker lists it)."""
    path = Path(path)
    refuse_input_as_output(path, inputs)
    if path.is_dir():
        if not any(path.iterdir()):
            return path  # an empty folder holds nothing to lose
        if not overwrite:
            raise SpineAIError(f"{path} already exists; pass --overwrite (overwrite=True) to replace what SpineAI "
                               f"wrote there")
        foreign = _foreign_files(path)
        if foreign:
            shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
            raise SpineAIError(f"{path} holds files SpineAI did not write ({shown}); --overwrite replaces only "
                               f"SpineAI's own outputs: choose a new folder")
    elif path.exists() and not overwrite:
        raise SpineAIError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    return path


def check_output_path(path: str | os.PathLike, overwrite: bool = False, inputs: Iterable = ()) -> Path:
    """An output *file* path: refused if it exists (unless ``overwrite``), is a folder, or is an input."""
    path = Path(path)
    if path.is_dir():
        raise SpineAIError(f"{path} is a folder, not a file name")
    path = refuse_existing(path, overwrite, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---- verification ---------------------------------------------------------------------------

def verify_file(path: Path, kind: str) -> None:
    """Read a just-written file back; raises ValueError / OSError when it is incomplete."""
    if path.stat().st_size == 0:
        raise ValueError("the file is empty")
    if kind in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        from spineai.image import read_volume

        read_volume(path)
    elif kind in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
        rows = list(csv.reader(text.splitlines(), csv.excel_tab if kind == ".tsv" else csv.excel))
        if not text.endswith("\n") or not rows or len({len(r) for r in rows}) != 1:
            raise ValueError("the CSV is cut short (no final line end, or rows of different lengths)")
    elif kind == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif kind == ".zip":
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"zip member {bad} is corrupt")
    elif kind == ".png":
        data = path.read_bytes()
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"):
            raise ValueError("the PNG is cut short")
    elif kind == ".html":
        if not path.read_text(encoding="utf-8").rstrip().endswith("</html>"):
            raise ValueError("the HTML page is cut short")


def _kind(name: str) -> str:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return "." + low.rsplit(".", 1)[1] if "." in low else ""  # a bare suffix (".csv") counts too


def _verified(tmp: Path, final: Path, kind: str, verify: Callable[[Path], None] | None = None) -> None:
    try:
        if tmp.stat().st_size == 0:
            raise ValueError("the file is empty")
        (verify or (lambda p: verify_file(p, kind)))(tmp)
    except SpineAIError as exc:
        raise _write_failed(final, str(exc)) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _write_failed(final, str(exc) or type(exc).__name__) from None


def _write_failed(path: Path, why: str) -> SpineAIError:
    try:
        free = shutil.disk_usage(path.parent).free
        space = f"; {free / 1e6:.1f} MB free on that disk" + (" (the disk is full)" if free < 1 << 20 else "")
    except OSError:
        space = ""
    return SpineAIError(f"writing {path} failed: the written file does not read back ({why}){space}; "
                        f"nothing was replaced")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder; its rename is durable enough
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _appeared(path: Path) -> SpineAIError:
    return SpineAIError(f"{path} was created by someone else (another SpineAI run?) while this one was writing it; "
                        f"it was left as it is and this result was not saved: run again with another output")


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished temporary into place; exclusive unless ``overwrite``."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError:
        # No hard links on this file system: reserve the name exclusively, then move onto it.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise _appeared(path) from None
        os.close(fd)
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str | None = None,
                 overwrite: bool = False, verify: Callable[[Path], None] | None = None) -> Path:
    """Write through ``write(tmp_path)``, verify the result, then move it to ``path``.

    ``verify(tmp_path)`` raises when the file does not read back as written; the default reads it
    back by its extension (``verify_file``).
    A failure (including a short write on a full disk) leaves neither half a file nor a damaged
    original. Without ``overwrite`` an existing ``path`` is never replaced, even one that appeared
    during the write.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        _fsync(tmp)
        _verified(tmp, path, _kind(suffix or path.name), verify)
        os.chmod(tmp, user_mode())
        publish(tmp, path, overwrite)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_output_folder(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False,
                        inputs: Iterable = ()) -> Path:
    """Write a folder output through ``write(tmp_folder)``; every file is verified, then the folder
    appears at once (new) or SpineAI's earlier files in it are replaced one by one (``overwrite``).
    Files SpineAI did not write are never touched: such a folder is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SpineAIError(f"{path} is a file; a folder output needs a folder name")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(), dir=path.parent))
    try:
        write(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        nested = [n for n in names if (tmp / n).is_dir()]
        if nested:
            raise SpineAIError(f"internal: folder outputs are flat, got sub-folders {nested}")
        for n in names:
            _fsync(tmp / n)
            _verified(tmp / n, path / n, _kind(n))
            os.chmod(tmp / n, user_mode())
        (tmp / OUTPUT_MARKER).write_text(json.dumps({"written_by": "SpineAI", "files": names}, indent=1) + "\n",
                                         encoding="utf-8")
        os.chmod(tmp / OUTPUT_MARKER, user_mode())
        os.chmod(tmp, user_mode(directory=True))
        if not path.exists():
            try:
                os.rename(tmp, path)  # replaces at most an empty folder
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise _appeared(path) from None
                raise
            _fsync_dir(path.parent)
            return path
        refuse_existing(path, overwrite, inputs)  # again: the folder may have changed during the work
        old = set(_read_marker(path))
        clean_stale_temps(path)
        for n in names:
            publish(tmp / n, path / n, overwrite=True)
        for n in sorted(old - set(names)):
            (path / n).unlink(missing_ok=True)
        os.replace(tmp / OUTPUT_MARKER, path / OUTPUT_MARKER)
        _fsync_dir(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
