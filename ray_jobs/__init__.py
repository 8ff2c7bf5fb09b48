"""Thin entrypoints that `ray job submit` runs; the logic lives in doctune."""
