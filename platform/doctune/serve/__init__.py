"""Ray Serve endpoints for registered models (see ``doctune.serve.app``)."""
