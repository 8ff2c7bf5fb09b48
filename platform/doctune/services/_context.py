"""The handles every service needs: settings, the stores, and the runner.

One :class:`Platform` per process (API server, job driver, CLI in-process
calls); built lazily so importing doctune costs nothing.
"""

from __future__ import annotations

from functools import cached_property

from doctune.config import Settings
from doctune.runners import Runner, runner_for
from doctune.store.keys import Principal
from doctune.store.stores import Stores

__all__ = ["Platform", "Principal"]


class Platform(Stores):
    """The stores plus the runner that hands work to the cluster; the API server also sets
    ``dispatcher`` so that submissions wake it."""

    def __init__(self, settings: Settings | None = None, runner: Runner | None = None) -> None:
        super().__init__(settings)
        if runner is not None:
            self.runner = runner
        self.dispatcher = None

    @cached_property
    def runner(self) -> Runner:  # type: ignore[override]  # set in __init__ when given
        return runner_for(self.settings)
