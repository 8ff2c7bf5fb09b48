"""Services: the one layer every door (API, CLI, console, operator, ray job submit) calls.

``tenants`` (keys, roles, ownership), ``datasets``, ``jobs`` (queue, follow, cancel) and
``scheduler`` (fair share, dispatch), ``sweeps``, ``registry`` (models), ``deployments``
(Ray Serve; promotion and rollback), ``plans`` and ``usage``. Each takes a
:class:`Platform` (settings, stores, runner) and the calling :class:`Principal`.
"""

from doctune.services._context import Platform, Principal

__all__ = ["Platform", "Principal"]
