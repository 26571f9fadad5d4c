"""Run pip and say what it is doing, for `make setup` on a fresh machine.

pip's own output is either a wall of text or, filtered, minutes of silence: the
downloads of the big wheels (the AWS provider bindings, Node) and then one
"Installing collected packages" line while it unpacks them all. This prints
what is being fetched (with sizes), what is being installed, and a line every
HEARTBEAT seconds while pip says nothing, with what it is busy with. On a
failure, the end of pip's own output and its exit code.

Standard library only: it runs with the system Python that creates the venv.
usage: python3 tools/pip_progress.py PIP ARGS...
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque

HEARTBEAT = float(os.environ.get("PIP_PROGRESS_SECONDS", "10"))  # silence before saying pip is still at work
BIG = re.compile(r"\(\d+(\.\d+)? [MG]B\)$")
SHOWN = re.compile(r"^(Collecting |Downloading |Installing collected packages|Successfully installed |Building |ERROR|error:)")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: pip_progress.py PIP ARGS...", file=sys.stderr)
        return 2
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: deque[str] = deque(maxlen=40)
    start = time.monotonic()
    doing = "resolving the pinned packages"
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT)
        except queue.Empty:
            print(f"setup: ... {doing} ({time.monotonic() - start:.0f} s so far)", flush=True)
            continue
        if line is None:
            break
        tail.append(line)
        stripped = line.strip()
        if not SHOWN.match(stripped) or (stripped.startswith("Downloading ") and not BIG.search(stripped)):
            continue  # pip's chatter, and downloads under a megabyte (the big ones take the time)
        if stripped.startswith("Installing collected packages"):
            count = len(stripped.split(":", 1)[1].split(","))
            doing = f"unpacking {count} packages into the venv (the AWS provider bindings and Node are the big ones)"
            print(f"setup: installing {count} packages into the venv", flush=True)
        elif stripped.startswith("Successfully installed"):
            print(f"setup: installed ({time.monotonic() - start:.0f} s)", flush=True)
        else:
            if stripped.startswith("Downloading "):
                doing = "downloading " + stripped.split()[1].rsplit("/", 1)[-1]
            elif stripped.startswith("Collecting "):
                doing = "fetching " + stripped.split()[1]
            print(f"setup: {stripped}", flush=True)
    code = proc.wait()
    if code != 0:
        print(f"setup: pip failed (exit {code}); its last lines:", file=sys.stderr)
        for line in tail:
            print(f"  {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
