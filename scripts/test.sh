#!/usr/bin/env bash
# The project's one test command: bash scripts/test.sh [pytest args]
#
# Sets up .venv when needed (and a RabbitMQ on 127.0.0.1:5672 when none answers,
# stopped again at the end), then runs ruff, mypy (strict, from pyproject.toml) and
# pytest over tests/ (unit, integration and chaos layers; extra arguments go to
# pytest, e.g. `-m "not chaos"` or `tests/unit -x`). Silent on success apart from
# pytest's summary; exits non-zero on the first failure.
set -euo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

ensure_venv
ensure_redis_server
ensure_rabbitmq
trap stop_rabbitmq EXIT

"$VENV/bin/ruff" check -q durable_graph tests bench
quietly "$VENV/bin/mypy"
"$PY" -m pytest -q "$@"
