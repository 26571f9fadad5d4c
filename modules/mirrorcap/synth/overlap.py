"""pipeline.synth_file with the provider load overlapped: what main.py runs.

The jsii Node process spends seconds loading the AWS provider bindings (their
index.js requires every resource module). This starts that load in a thread
while prepare() runs; the result is the same as pipeline.synth_file.

prepare() runs in a forked child, not a thread: parsing a large inventory in
a thread of this process starves the loader (each of its module imports gives
up the GIL at a file read and waits a switch interval to get it back; at 1,000
sources the provider load began 0.8 s late). A bad inventory exits as soon as
the child says so, without waiting for the load. bench/synth_scale.py --plain
measures what this earns over the plain path.
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import MirrorcapError
from .pipeline import STACK_MODULE, prepare, skip_token_creation_stacks, synth


def _prepare_in_child(path: str | Path):
    """prepare(), with a MirrorcapError sent back as its problems (they pickle; the exception's own pickling does not)."""
    try:
        return prepare(path), None
    except MirrorcapError as exc:
        return None, exc.problems


def synth_file(path: str | Path, review_hcl: bool = False) -> list[Path]:
    skip_token_creation_stacks()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as child:
        prepared = child.submit(_prepare_in_child, path)  # forks here, before any thread or Node process exists
        loader = threading.Thread(target=importlib.import_module, args=(STACK_MODULE,), name="load-cdktn", daemon=True)
        loader.start()  # synth()'s own import of the same module waits for it
        inputs, problems = prepared.result()
    if problems is not None:
        raise MirrorcapError(problems)
    return synth(inputs, review_hcl=review_hcl)
