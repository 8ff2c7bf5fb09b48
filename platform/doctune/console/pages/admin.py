"""Admin: tenants, weights and quotas, keys, the queue in fair-share order, and cluster resources."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
