#!/usr/bin/env bash
# The project's one test command: bash scripts/test.sh [pytest args]
#
# Sets up .venv when needed (and a RabbitMQ on 127.0.0.1:5672 when none answers,
# stopped again at the end), then runs ruff, mypy (strict, from pyproject.toml) and
# pytest over tests/. With no arguments that is the default suite: every layer but
# the slow crash tests marked `chaos` (SIGKILL soaks, bursts, Redis restarts), which
# run with `bash scripts/test.sh -m chaos` (or everything: `-m "chaos or not chaos"`).
# Extra arguments go to pytest instead, e.g. `tests/unit -x`. Silent on success apart
# from pytest's summary; exits non-zero on the first failure.
set -euo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

ensure_venv
ensure_redis_server
ensure_rabbitmq
trap stop_rabbitmq EXIT

"$VENV/bin/ruff" check -q durable_graph tests bench
quietly "$VENV/bin/mypy"
if [ "$#" -eq 0 ]; then
    set -- -m "not chaos"
fi
"$PY" -m pytest -q "$@"
