# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/demo.sh so that set-up is written once:
# a fresh clone on a fresh machine must get from nothing to a working .venv, and an
# already set-up one must get there in well under a second (no pip when the stamp
# is newer than pyproject.toml).
#
# After sourcing: the working directory is the repo root, and ROOT, VENV and PY
# are set. Call ensure_venv, and ensure_redis_server where Redis is needed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.installed"
# One set of extras for every entry point, so one stamp says the venv is complete.
EXTRAS="test,oracle"
BOOTSTRAP_LOG="${TMPDIR:-/tmp}/durable-graph-bootstrap.$$.log"
cd "$ROOT" || exit 1

# Print a message to stderr and exit non-zero.
die() {
    echo "error: $*" >&2
    exit 1
}

# Run a command with its output kept in a log; show the log only if it fails,
# so set-up is silent when it works and complete when it does not.
quietly() {
    if ! "$@" >"$BOOTSTRAP_LOG" 2>&1; then
        cat "$BOOTSTRAP_LOG" >&2
        rm -f "$BOOTSTRAP_LOG"
        die "failed: $*"
    fi
    rm -f "$BOOTSTRAP_LOG"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Install Debian packages when we can (root with apt-get); false otherwise.
apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    quietly apt-get update -qq
    quietly apt-get install -y -qq --no-install-recommends "$@"
}

# Whether "$1" is a Python interpreter new enough for the package (>= 3.11).
python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# The first python >= 3.11 on PATH, installing Debian's python3 as a last resort.
find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    if apt_install python3 python3-venv && python_ok python3; then
        echo python3
        return 0
    fi
    die "durable-graph needs Python >= 3.11 (python3 on PATH is missing or older)"
}

# Create .venv, or re-create it when its interpreter is missing, broken or too old.
create_venv() {
    local python
    python="$(find_python)"
    if ! "$python" -m venv --clear "$VENV" >/dev/null 2>&1; then
        # Debian splits ensurepip out of python3 into python3-venv.
        apt_install python3-venv || die "'$python -m venv' failed; install python3-venv"
        quietly "$python" -m venv --clear "$VENV"
    fi
    rm -f "$STAMP"
}

# Whether the venv already has this checkout installed with the current extras.
venv_is_current() {
    [ -f "$STAMP" ] && [ "$STAMP" -nt "$ROOT/pyproject.toml" ] \
        && [ "$(cat "$STAMP")" = "$EXTRAS" ] \
        && "$PY" -c 'import durable_graph' >/dev/null 2>&1
}

# Make .venv hold an editable install of this checkout with the test and oracle
# extras; pip runs only when pyproject.toml changed or the install is missing.
ensure_venv() {
    python_ok "$PY" || create_venv
    venv_is_current && return 0
    quietly "$PY" -m pip install --disable-pip-version-check -q -e ".[$EXTRAS]"
    echo "$EXTRAS" >"$STAMP"
}

# The test suite's conftest starts redis-server when nothing answers on 6379, so
# the binary must exist; install it when we are root, else say what is missing.
ensure_redis_server() {
    command -v redis-server >/dev/null 2>&1 && return 0
    apt_install redis-server && return 0
    echo "warning: redis-server is not installed and cannot be installed here" \
        "(need root and apt-get); Redis tests will fail unless 127.0.0.1:6379 answers" >&2
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

RABBITMQ_STARTED=""
# The RabbitMQ broker tests need a RabbitMQ on 127.0.0.1:5672 (guest/guest). When
# nothing answers there, install rabbitmq-server (root with apt-get) and start it
# detached; stop_rabbitmq stops only a server this script started.
ensure_rabbitmq() {
    port_answers 5672 && return 0
    if ! command -v rabbitmq-server >/dev/null 2>&1 && ! apt_install rabbitmq-server; then
        echo "warning: nothing answers on 127.0.0.1:5672 and rabbitmq-server cannot be" \
            "installed here (need root and apt-get); the RabbitMQ tests will fail" >&2
        return 0
    fi
    rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq-server -detached failed"
    RABBITMQ_STARTED=1
    local waited=0
    until port_answers 5672; do
        [ "$waited" -ge 120 ] && die "RabbitMQ did not answer on 127.0.0.1:5672 within 60 s"
        sleep 0.5
        waited=$((waited + 1))
    done
    quietly rabbitmqctl await_startup
}

# Stop the RabbitMQ that ensure_rabbitmq started (none otherwise).
stop_rabbitmq() {
    [ -n "$RABBITMQ_STARTED" ] || return 0
    rabbitmqctl stop >/dev/null 2>&1 || true
    RABBITMQ_STARTED=""
}
