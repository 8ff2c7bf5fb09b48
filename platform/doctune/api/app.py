"""The import path `uvicorn doctune.api.app:create_app --factory` and older callers use."""
from doctune.api.main import create_app  # noqa: F401

__all__ = ["create_app"]
