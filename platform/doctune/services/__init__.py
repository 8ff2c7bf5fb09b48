"""Services: the one layer every door (API, CLI, ray job submit) calls.

``tenants`` (keys, roles, ownership), ``datasets``, ``jobs`` (submit to Ray,
follow, cancel), ``registry`` (models) and ``deployments`` (Ray Serve; promotion and
rollback). Each takes
a :class:`Platform` (settings + stores) and the calling :class:`Principal`.
"""

from doctune.services._context import Platform, Principal

__all__ = ["Platform", "Principal"]
