"""Background jobs: Cancel stops the worker itself, also when a launcher that does not `exec`
(as PythonSlicer) started it; no console window on Windows."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest

from SpineAICommon.jobs import ProcessRunner, background_popen_options, write_job


def _launcher(tmp_path: Path) -> Path:
    """A PythonSlicer stand-in: starts the real interpreter as a child and waits for it."""
    script = tmp_path / "PythonSlicer"
    script.write_text(f"#!{sys.executable}\n"
                      "import subprocess, sys\n"
                      "sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n")
    script.chmod(0o755)
    return script


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its exit status waits to be read


def _wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.skipif(os.name != "posix" or not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_cancel_stops_the_worker_behind_a_launcher(tmp_path):
    heartbeat = tmp_path / "beats.txt"
    folder = tmp_path / "job"
    folder.mkdir()
    params = {"heartbeat": str(heartbeat)}
    write_job(folder, "slow_task:run", params)
    job = ProcessRunner(python=str(_launcher(tmp_path))).start("slow_task:run", params, folder)
    _wait_for(lambda: heartbeat.exists() and len(heartbeat.read_text()) >= 3 and job.worker_pid)
    assert job.worker_pid != job._process.pid  # the worker is the launcher's child, not the launcher
    assert job.poll().message == "working" and not job.status.finished
    job.cancel()
    assert job.status.cancelled and job.status.finished
    beats = len(heartbeat.read_text())
    time.sleep(1.0)  # 20 beats if it still ran
    assert len(heartbeat.read_text()) == beats, "the worker kept working after Cancel"
    assert not _running(job.worker_pid) and not _running(job._process.pid)


def test_cancel_right_after_start_stops_everything(tmp_path):
    heartbeat = tmp_path / "beats.txt"
    folder = tmp_path / "job"
    folder.mkdir()
    params = {"heartbeat": str(heartbeat)}
    write_job(folder, "slow_task:run", params)
    job = ProcessRunner(python=str(_launcher(tmp_path))).start("slow_task:run", params, folder)
    job.cancel()  # before the worker has said its pid: the process group goes
    time.sleep(1.0)
    beats = len(heartbeat.read_text()) if heartbeat.exists() else 0
    time.sleep(0.5)
    assert (len(heartbeat.read_text()) if heartbeat.exists() else 0) == beats


def test_windows_hides_the_console_window_as_launchconsoleprocess_does():
    class STARTUPINFO:
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1

    fake = types.SimpleNamespace(STARTUPINFO=STARTUPINFO, STARTF_USESHOWWINDOW=1, CREATE_NO_WINDOW=0x08000000)
    options = background_popen_options("nt", fake)
    assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0
    assert options["creationflags"] == 0x08000000
    assert background_popen_options("posix") == {"start_new_session": True}  # its own process group
