"""One APIRouter per resource; ``doctune.api.main`` includes them all (:data:`ROUTERS`)."""

from doctune.api.routes import (attempts, base_models, cluster, datasets, deployments, health, jobs, keys, leaderboard,
                                metrics, models, promotions, sweep_driver, sweeps, tasks, tenants, usage, whoami)

ROUTERS = [module.router for module in (health, metrics, whoami, tenants, keys, datasets, jobs, sweeps, leaderboard, models,
                                        base_models, deployments, promotions, usage, tasks, cluster,
                                        attempts, sweep_driver)]

__all__ = ["ROUTERS"]
