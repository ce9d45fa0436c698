"""Engine work in a separate Python process, so Slicer's interface never freezes.

Why a process and not a thread: the engine spends its time in C code (SimpleITK, PyRadiomics)
that holds Python's global lock, so a thread would still stall the interface; a process can also be
cancelled at any moment (terminated) without leaving half-written nodes, because nodes are only
created from the results after the process has finished.

Protocol (all files in a private temporary folder):
- ``job.json``: ``{"task": "package.module:function", "params": {...}}``; arrays as ``.npy`` files
  named in ``params`` (never pickled: ``allow_pickle=False`` both ways).
- The worker prints one JSON object per line on stdout: first ``{"pid": its process id}``, then
  ``{"progress": [done, total, message]}``, then ``{"done": true}`` or ``{"error": message, "user_error": bool}``.

Cancel kills the worker itself: ``PythonSlicer`` is a launcher that starts the interpreter as a
child, so killing the process we started would leave the worker computing. The worker's pid comes
from its first line; on Linux and macOS the launcher also starts a new process group, killed whole
(for a Cancel that comes before the pid line); on Windows ``taskkill /T`` ends the launcher's tree.
On Windows no console window opens (hidden as ``slicer.util.launchConsoleProcess`` hides it).
- The task function ``function(folder, params, progress)`` writes its outputs into ``folder``.

The runner is injected into the module logic (as in SlicerNNUnet), so tests can run jobs in-process
(``InProcessRunner``) or in a real subprocess (``ProcessRunner`` with the test interpreter).
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from spineai.errors import SpineAIError


def _import_task(spec: str) -> Callable:
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def write_job(folder: Path, task: str, params: dict) -> None:
    (folder / "job.json").write_text(json.dumps({"task": task, "params": params}), encoding="utf-8")


@dataclass
class JobStatus:
    """What the interface shows: progress so far, and the outcome once finished."""

    done: int = 0
    total: int = 1
    message: str = ""
    finished: bool = False
    cancelled: bool = False
    error: Optional[str] = None
    log: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.finished and not self.cancelled and self.error is None


class Job:
    """A running (or finished) task. ``poll()`` is cheap and never blocks: call it from a timer."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.status = JobStatus()

    def poll(self) -> JobStatus:  # pragma: no cover - overridden
        raise NotImplementedError

    def cancel(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def wait(self, timeout: float = 600.0, interval: float = 0.05) -> JobStatus:
        """Block until finished (headless / batch use and tests)."""
        import time

        end = time.monotonic() + timeout
        while not self.poll().finished:
            if time.monotonic() > end:
                self.cancel()
                raise SpineAIError(f"the background task did not finish within {timeout:.0f} s and was cancelled")
            time.sleep(interval)
        return self.status

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            self.status.log.append(line)  # stray output from a library: keep it for the log
            return
        if "progress" in message:
            self.status.done, self.status.total, self.status.message = message["progress"]
        elif message.get("done"):
            self.status.finished = True
        elif "error" in message:
            self.status.error = message["error"]
            self.status.finished = True


class InProcessJob(Job):
    """Runs the task synchronously at start (headless batch use, tests)."""

    def __init__(self, folder: Path, task: str, params: dict):
        super().__init__(folder)
        for line in _run_task_lines(folder, task, params):
            self._handle(line)
        self.status.finished = True

    def poll(self) -> JobStatus:
        return self.status

    def cancel(self) -> None:
        pass


def background_popen_options(os_name: str = os.name, subprocess_module=subprocess) -> dict:
    """Popen arguments for a background worker: no console window on Windows (the
    ``startupinfo`` of ``slicer.util.launchConsoleProcess``), its own process group elsewhere."""
    if os_name == "nt":
        info = subprocess_module.STARTUPINFO()
        info.dwFlags |= subprocess_module.STARTF_USESHOWWINDOW
        info.wShowWindow = 0  # SW_HIDE
        return {"startupinfo": info, "creationflags": getattr(subprocess_module, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


class ProcessJob(Job):
    """Runs ``python -m SpineAICommon.worker FOLDER`` and reads its progress lines."""

    def __init__(self, folder: Path, python: str, pythonpath: list[str]):
        super().__init__(folder)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(pythonpath + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.worker_pid: Optional[int] = None  # the interpreter running the task (a launcher's child)
        self._process = subprocess.Popen(
            [python, "-m", "SpineAICommon.worker", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            **background_popen_options(),
        )
        # Reading a pipe blocks; a small reader thread keeps poll() non-blocking.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if self.worker_pid is None and line.startswith('{"pid"'):
                self.worker_pid = int(json.loads(line)["pid"])  # read here, so Cancel knows it at once
                continue
            self._lines.put(line)
        self._lines.put(None)

    def poll(self) -> JobStatus:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                code = self._process.wait()
                if not self.status.finished:
                    self.status.finished = True
                    if not self.status.cancelled and self.status.error is None:
                        tail = "\n".join(self.status.log[-5:])
                        self.status.error = f"the background process stopped unexpectedly (exit code {code})" + (
                            f": {tail}" if tail else ""
                        )
                break
            self._handle(line)
        return self.status

    def cancel(self) -> None:
        # The worker holds the pipe open while it runs, even after a launcher has ended.
        if self._process.poll() is None or self._reader.is_alive():
            self._kill()
        self.status.cancelled = True
        self.status.finished = True
        self.status.message = "cancelled"

    def _kill(self) -> None:
        launcher = self._process.pid
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(launcher)], capture_output=True,
                           **background_popen_options())
        else:
            try:
                os.killpg(launcher, signal.SIGKILL)  # launcher, worker and anything they started
            except (ProcessLookupError, PermissionError):
                pass
        if self.worker_pid is not None and self.worker_pid != launcher:
            try:  # the worker may have left the group (or, on Windows, the tree)
                os.kill(self.worker_pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            except (ProcessLookupError, PermissionError, OSError):
                pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


def _run_task_lines(folder: Path, task: str, params: dict):
    """Run a task in this process, yielding the protocol's lines (shared by the worker)."""
    lines = []

    def progress(done: int, total: int, message: str = "") -> None:
        lines.append(json.dumps({"progress": [int(done), int(total), str(message)]}))

    try:
        _import_task(task)(folder, params, progress)
        lines.append(json.dumps({"done": True}))
    except SpineAIError as exc:
        lines.append(json.dumps({"error": str(exc), "user_error": True}))
    except Exception as exc:  # noqa: BLE001 - reported to the user, with the type for the log
        lines.append(json.dumps({"error": f"{type(exc).__name__}: {exc}", "user_error": False}))
    return lines


class InProcessRunner:
    """Runs tasks at once in this process (batch scripts, tests)."""

    def start(self, task: str, params: dict, folder: Path) -> Job:
        return InProcessJob(folder, task, params)


class JobLogic:
    """What every module logic that runs jobs holds: its scene (``slicer.mrmlScene`` unless given;
    read when used, so a module can set it late) and its job runner (this process unless the widget
    passes a ``ProcessRunner``)."""

    def __init__(self, scene=None, runner=None):
        self._scene = scene
        self.runner = runner or InProcessRunner()

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene


class ProcessRunner:
    """Runs tasks in a child Python: ``PythonSlicer`` inside Slicer, any interpreter elsewhere."""

    def __init__(self, python: Optional[str] = None, pythonpath: Optional[list[str]] = None):
        self.python = python or default_python()
        self.pythonpath = pythonpath if pythonpath is not None else default_pythonpath()

    def start(self, task: str, params: dict, folder: Path) -> Job:
        # The folder holding the task's package travels too (a module's Lib package).
        module = importlib.import_module(task.partition(":")[0])
        package_root = Path(module.__file__).resolve().parents[module.__name__.count(".")]
        return ProcessJob(folder, self.python, list(dict.fromkeys(self.pythonpath + [str(package_root)])))


def default_python() -> str:
    # Inside Slicer, sys.executable is the application; PythonSlicer is its Python launcher.
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(candidate) if candidate.exists() else sys.executable


def default_pythonpath() -> list[str]:
    """Folders that hold ``spineai`` and ``SpineAICommon`` (the same source the modules import)."""
    import spineai

    paths = [Path(spineai.__file__).resolve().parents[1], Path(__file__).resolve().parents[1]]
    return list(dict.fromkeys(str(p) for p in paths))


def new_job_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="spineai-job-"))
