"""One module per console tab; each has ``build(console)`` (see :mod:`doctune.console.app`)."""
