"""A background task that keeps working until it is stopped: it appends a dot to a file every
50 ms, so a test can see whether the worker still runs after Cancel."""

from __future__ import annotations

import time
from pathlib import Path


def run(folder, params, progress) -> None:
    beats = Path(params["heartbeat"])
    for n in range(int(params.get("beats", 1200))):
        with beats.open("a") as fh:
            fh.write(".")
        progress(n, 1200, "working")
        time.sleep(0.05)
