#!/bin/sh
# The doctune image's entrypoint: a role name runs that component, anything else runs as given.
# The Helm chart sets each container's command itself (these are the same commands); KubeRay runs its
# own `ray start` in the Ray Pods. Roles:
#   api [uvicorn args]        the REST API on 0.0.0.0:${PORT:-8080}
#   bootstrap                 migrate the database, store the first admin key (the API's init container)
#   console [args]            the Gradio console on 0.0.0.0:${PORT:-7860}; needs --api-url or DOCTUNE_API_URL
#   operator [kopf args]      the kopf operator, all namespaces
#   ray-head [ray args]       `ray start --head --block`
#   ray-worker [ray args]     `ray start --block --address=${RAY_ADDRESS}`
set -e
role="${1:-api}"
[ $# -gt 0 ] && shift
case "$role" in
  api) exec python -m uvicorn doctune.api.app:create_app --factory --host 0.0.0.0 --port "${PORT:-8080}" --proxy-headers "$@" ;;
  bootstrap) exec python -m doctune.store.bootstrap "$@" ;;
  console) exec python -m doctune.console --host 0.0.0.0 --port "${PORT:-7860}" ${DOCTUNE_API_URL:+--api-url "$DOCTUNE_API_URL"} "$@" ;;
  operator) exec kopf run --standalone --all-namespaces --liveness=http://0.0.0.0:8081/healthz -m operators.doctune_operator.handlers "$@" ;;
  ray-head) exec ray start --head --block --dashboard-host=0.0.0.0 "$@" ;;
  ray-worker) exec ray start --block --address="${RAY_ADDRESS:?set RAY_ADDRESS to the head, host:6379}" "$@" ;;
  *) exec "$role" "$@" ;;
esac
