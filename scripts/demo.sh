#!/usr/bin/env bash
# The project's main job: bash scripts/demo.sh [demo args]
# Sets up .venv when needed, then hands over to durable_graph.demo.
set -euo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

ensure_venv
exec "$PY" -m durable_graph.demo "$@"
