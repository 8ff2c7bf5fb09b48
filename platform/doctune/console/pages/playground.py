"""Playground: call a deployed endpoint per task (label bars with token attributions, highlighted entities, JSON fields, text, ranked documents)."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
