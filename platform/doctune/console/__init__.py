"""The Gradio console: a tenant's whole workflow in the browser (docs/console.md).

It runs in its own process (``python -m doctune.console``; ``doctune up`` starts it) and calls the
public REST API with the signed-in tenant's key, through :class:`doctune.client.DoctuneClient`.
It imports nothing from train/, serve/, drivers/ or services/ (an import-linter contract)."""
