"""CDK Terrain entry point: `cdktn synth|diff|deploy` run this file.

    inventory file -> synth.pipeline.prepare() -> synth.pipeline.synth()
                      (validated, sessions       (one CaptureStack per capture:
                       numbered, user data        modules/mirrorcap/stack/)
                       rendered)

cdktn starts it with no arguments, so its two inputs are environment variables:
MIRRORCAP_INVENTORY (default capture.hcl) and MIRRORCAP_REVIEW_HCL=1 for the
review copy in cdktf.out/review/<capture>.tf (`make synth` sets it; `cdktn
deploy` must not). synth.overlap runs the pipeline with the provider load
overlapped. cdktf.json runs this with `python3 -O`: jsii's per-call runtime
type checks are skipped in production synth (about a third of the per-resource
cost); the test suite runs it without -O, so those checks still guard every commit.
"""

import os
import sys

from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory import DEFAULT_INVENTORY
from mirrorcap.synth import overlap

if __name__ == "__main__":
    inventory = os.environ.get("MIRRORCAP_INVENTORY", DEFAULT_INVENTORY)
    review_hcl = os.environ.get("MIRRORCAP_REVIEW_HCL") == "1"
    try:
        overlap.synth_file(inventory, review_hcl=review_hcl)
    except MirrorcapError as exc:
        print(f"mirrorcap: {exc}", file=sys.stderr, flush=True)
        # The provider may still be loading in a daemon thread (synth.overlap): an
        # interpreter shutdown would let it write to closed streams, a traceback
        # after a clean error. Nothing has been written yet, so leave at once.
        os._exit(1)
