"""`python -m mirrorcap ...` is `mirrorcap ...` (the same app, for an interpreter without the script on PATH)."""

from mirrorcap.cli import app

app(prog_name="mirrorcap")
