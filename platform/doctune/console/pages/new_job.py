"""New job: a form generated from JobSpec, the pre-flight plan, and the YAML, doctune and ray job submit lines."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
