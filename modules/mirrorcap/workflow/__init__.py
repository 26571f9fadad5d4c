"""The team workflow around mirrorcap: plan review in pull requests, apply on
merge, drift on a schedule, the AMI bake.

The GitHub Actions workflows (workflows/github/) and the Packer template
(packer/) call into this package for everything that is mirrorcap's own
knowledge, so it is tested here rather than in YAML:

- stacks.py: which stacks a change touches, and why;
- plan.py: a saved plan's JSON checked and counted as Terraform counts it;
- sessions.py: the lock diff's session-number changes in words, checked
  against the plan;
- comment.py: the pull-request comment; drift.py: the drift job's summary;
  applied.py: the apply report on the merged pull request (all pure);
- markdown.py: text from outside made inert in Markdown;
- reviewed.py: a plan's changes as a review approves them, its fingerprint, and
  whether a merge's fresh plan is the reviewed one (or what is left of it);
  destroys and the pcap-data gate;
- cost.py: a plan's monthly cost change, priced with capacity.py's model;
- inputs.py: what the review commands read besides a plan (git revisions,
  cdktn's manifest, the drift and apply steps' result files);
- bake.py: the Packer variables for one capture's rendered bake.sh;
- deploy.py: make's preflight before cdktn (diff, deploy, destroy, output) and
  the remote-state bucket (make state-bucket).

Their commands (`mirrorcap review|bake|preflight|state-bucket`) are in cli/.
"""
