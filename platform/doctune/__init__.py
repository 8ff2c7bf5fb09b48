"""doctune: multi-tenant fine-tuning and serving of document-AI models.

The public surface is small: specs (``doctune.spec``) describe work, services
(``doctune.services``) do it, and the doors (API, CLI, ``ray job submit``) only
translate between the outside world and those two.
"""

from doctune.errors import DoctuneError

__all__ = ["DoctuneError", "__version__"]
__version__ = "0.1.0"
