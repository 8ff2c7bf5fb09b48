"""The `doctune` command: the local stack, and the platform's REST API from a shell.

This module only composes: the root :data:`app` (the console script
``doctune.cli:app``) with its global ``-o/--output`` option, one group per
resource (``tenants``, ``keys``, ``datasets``, ``jobs``, ``sweeps``, ``models``,
``deployments``, ``tasks``), and the top-level commands (``up``, ``down``,
``status``, ``demo``, ``deploy``, ``undeploy``, ``promote``, ``rollback``,
``revisions``). Every command that touches tenants' data goes through the API with
an API key (``--api-key`` or ``DOCTUNE_API_KEY``; the embedded stack's admin key in
``$DOCTUNE_HOME/stack.json`` only with the global ``--as-admin``, never as a silent fallback). Errors print as one line
with the field and the fix, and exit 2.
"""

from __future__ import annotations

import typer

from doctune.cli import datasets, deployments, demo, jobs, keys, models, stack, sweeps, tasks, tenants
from doctune.cli.output import FORMATS, OneLineErrors, set_format
from doctune.cli.session import set_as_admin

__all__ = ["app", "main"]

app = typer.Typer(cls=OneLineErrors, help="doctune: fine-tune and serve document-AI models.", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _options(output: str = typer.Option("json", "--output", "-o", help=f"{' or '.join(FORMATS)}: how lists print."),
             as_admin: bool = typer.Option(False, "--as-admin", help="Use the local stack's admin key "
                                           "($DOCTUNE_HOME/stack.json) instead of --api-key / DOCTUNE_API_KEY.")) -> None:
    set_format(output)
    set_as_admin(as_admin)


for _command in (stack.up, stack.down, stack.status, demo.demo, deployments.deploy, deployments.undeploy,
                 deployments.promote, deployments.rollback, deployments.revisions):
    app.command()(_command)

app.add_typer(tenants.app, name="tenants")
app.add_typer(keys.app, name="keys")
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(sweeps.app, name="sweeps")
app.add_typer(models.app, name="models")
app.add_typer(deployments.app, name="deployments")
app.add_typer(tasks.app, name="tasks")


def main() -> None:  # pragma: no cover
    app()
