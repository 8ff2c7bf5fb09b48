"""`doctune up`, `down` and `status`: the embedded local stack (:mod:`doctune.local`)."""

from __future__ import annotations

from typing import Optional

import typer

__all__ = ["down", "status", "up"]


def up(cpus: Optional[int] = typer.Option(None, help="Logical CPUs for the Ray head (default 4, or DOCTUNE_RAY_CPUS).")) -> None:
    """Start the embedded local stack (Ray head, S3 server, metadata store, API, console)."""
    from doctune.local import LocalStack, console_url

    stack = LocalStack(num_cpus=cpus)
    s = stack.up(echo=typer.echo)
    typer.echo(
        f"\nRay is at {s.ray_dashboard_url} with token auth on. To submit jobs yourself:\n"
        f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={s.ray_token_path}\n"
        f"  ray job submit --address {s.ray_dashboard_url} -- python -m ray_jobs.finetune --spec job.yaml\n"
        f"API: {s.api_url}   admin key: in {stack.home / 'stack.json'} (admin_key)\n"
        f"Console: {console_url(s)}   (sign in with an API key; its log is {stack.log_dir / 'console.log'})"
    )


def down() -> None:
    """Stop the embedded local stack (data under $DOCTUNE_HOME is kept)."""
    from doctune.local import LocalStack

    LocalStack().down(echo=typer.echo)


def status() -> None:
    """Report each component of the local stack; exit 1 if any is down."""
    from doctune.local import LocalStack

    st = LocalStack().status()
    for name, row in st.items():
        colour = "green" if row["state"] == "up" else "red"
        typer.echo(f"{name:5} " + typer.style(f"{row['state']:5}", fg=colour) + f" {row['where']}")
    if any(r["state"] != "up" for r in st.values()):
        raise typer.Exit(1)
