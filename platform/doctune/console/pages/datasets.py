"""Datasets: upload JSONL/CSV, preview, detected labels with a class-balance chart, validation errors by line and field, delete."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
