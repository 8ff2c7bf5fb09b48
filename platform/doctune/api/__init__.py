"""The REST API door: FastAPI routes that translate HTTP to service calls and errors to HTTP.

``create_app()`` builds it (``doctune.api.main``); ``doctune.api.app`` keeps the old import path.
"""

from doctune.api.main import create_app

__all__ = ["create_app"]
