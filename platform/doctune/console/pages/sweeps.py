"""Sweeps: launch from a job plus a search space, the leaderboard, hyperparameter-vs-metric plots, promote the winner."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console


def build(console: Console) -> None:
    gr.Markdown("This page is being built.")
