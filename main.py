"""CDK Terrain entry point: `cdktn synth|diff|deploy` run this file.

It only wires the inventory to the stacks; everything else lives in modules/.
Inventory: $MIRRORCAP_INVENTORY (default capture.hcl). Review HCL (cdktf.out/review/<capture>.tf):
MIRRORCAP_REVIEW_HCL=1, which `make synth` sets and `cdktn deploy` must not.
cdktf.json runs it with `python3 -O`: jsii's per-call runtime type checks are
skipped in production synth (about a third of the per-resource cost); the test
suite runs it without -O, so those checks still guard every commit.
"""

import os
import sys

from mirrorcap.synth.pipeline import synth_file
from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory import DEFAULT_INVENTORY

if __name__ == "__main__":
    try:
        synth_file(os.environ.get("MIRRORCAP_INVENTORY", DEFAULT_INVENTORY),
                   review_hcl=os.environ.get("MIRRORCAP_REVIEW_HCL") == "1")
    except MirrorcapError as exc:
        print(f"mirrorcap: {exc}", file=sys.stderr, flush=True)
        # The provider may still be loading in a daemon thread (app.synth_file): an
        # interpreter shutdown would let it write to closed streams, a traceback
        # after a clean error. Nothing has been written yet, so leave at once.
        os._exit(1)
