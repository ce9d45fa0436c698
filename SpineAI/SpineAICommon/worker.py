"""Entry point of the background process: ``python -m SpineAICommon.worker FOLDER``.

Reads ``FOLDER/job.json``, runs the named task and prints the protocol's JSON lines (see jobs.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(json.dumps({"error": "usage: python -m SpineAICommon.worker JOB_FOLDER", "user_error": False}))
        return 2
    # First line: this interpreter's pid, so Cancel can kill it even when a launcher started it.
    print(json.dumps({"pid": os.getpid()}), flush=True)
    folder = Path(argv[0])
    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    from SpineAICommon.jobs import _import_task

    from spineai.errors import SpineAIError

    def progress(done: int, total: int, message: str = "") -> None:
        print(json.dumps({"progress": [int(done), int(total), str(message)]}), flush=True)

    try:
        _import_task(job["task"])(folder, job["params"], progress)
    except SpineAIError as exc:
        print(json.dumps({"error": str(exc), "user_error": True}), flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - reported to the interface
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "user_error": False}), flush=True)
        return 1
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
