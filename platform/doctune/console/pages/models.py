"""Models and deployments: registered models with metrics, deploy with autoscaling and batching, revisions, replicas, request metrics, rollback."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
