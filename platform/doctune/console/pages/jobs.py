"""Jobs: the list with state, progress and queue reason, quota usage, and a live job page (curves, events, logs, cancel/pause/resume, report)."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
