"""`python -m doctune.cli ...`: the same command as the `doctune` console script."""

from doctune.cli import app

app(prog_name="doctune")
