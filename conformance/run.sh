#!/usr/bin/env bash
# The Autobahn TestSuite against wsevents, both roles, every case.
#
#   conformance/run.sh            build the testees, run server and client roles
#   conformance/run.sh server     only the server role (kosoku drives our echo server)
#   conformance/run.sh client     only the client role (our client drives kosoku's
#                                 fuzzing server)
#
# The runner is kosoku (PyPI), installed into .venv at the repository root, pinned.
# Prints one line per role:
#   autobahn server: OK=N NON-STRICT=N INFORMATIONAL=N UNIMPLEMENTED=N FAILED=N
# and exits non-zero if any case FAILED or is NON-STRICT, if fewer cases than the
# full suite ran, or if any is UNIMPLEMENTED (allowed with AUTOBAHN_ALLOW_UNIMPLEMENTED=1).
# Reports (JSON and HTML) are left in conformance/reports/{server,client}/.
set -euo pipefail

KOSOKU_VERSION=0.1.0
FULL_SUITE=517
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/.venv"
reports="$here/reports"
roles=("${@:-server client}")
roles=(${roles[@]})

ensure_kosoku() {
    if [ -x "$venv/bin/kosoku" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kosoku') != '$KOSOKU_VERSION')" 2>/dev/null; then
        return
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 200); do
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "process $pid died before listening on $port" >&2; return 1; }
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$port" >&2
    return 1
}

children=()
cleanup() {
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

summarize() {
    local role=$1
    local flags=(--min-cases "$FULL_SUITE")
    [ "${AUTOBAHN_ALLOW_UNIMPLEMENTED:-0}" = 1 ] && flags+=(--allow-unimplemented)
    python3 "$here/summarize.py" "$role" "$reports/$role" "${flags[@]}"
}

run_server_role() {
    trap cleanup EXIT INT TERM
    local port
    port=$(free_port)
    rm -rf "$reports/server"
    AUTOBAHN_ADDR="127.0.0.1:$port" "${CARGO_TARGET_DIR:-$root/target}/release/examples/autobahn_server" 2>"$reports/server-testee.log" &
    local testee=$!
    children+=("$testee")
    wait_for_port "$port" "$testee"
    # kosoku exits non-zero when any case is not OK; the summary below judges.
    timeout 900 "$venv/bin/kosoku" "127.0.0.1:$port" -p 2 -o "$reports/server" >"$reports/server-runner.log" 2>&1 || true
    kill "$testee" 2>/dev/null || true
    summarize server
}

run_client_role() {
    trap cleanup EXIT INT TERM
    local port
    port=$(free_port)
    rm -rf "$reports/client"
    timeout 900 "$venv/bin/kosoku" -m fuzzingserver "127.0.0.1:$port" -o "$reports/client" >"$reports/client-runner.log" 2>&1 &
    local fuzzer=$!
    children+=("$fuzzer")
    wait_for_port "$port" "$fuzzer"
    AUTOBAHN_URL="ws://127.0.0.1:$port" AUTOBAHN_AGENT=wsevents \
        timeout 900 "${CARGO_TARGET_DIR:-$root/target}/release/examples/autobahn_client" 2>"$reports/client-testee.log" || true
    # The fuzzing server writes its reports and exits once the client asked for them.
    for _ in $(seq 1 600); do kill -0 "$fuzzer" 2>/dev/null || break; sleep 0.1; done
    kill "$fuzzer" 2>/dev/null || true
    summarize client
}

ensure_kosoku
mkdir -p "$reports"
(cd "$root" && cargo build --release --locked --quiet -p wsevents --example autobahn_server --example autobahn_client)

# The roles run side by side: each is a single-threaded Python runner plus a testee,
# and the permessage-deflate cases (12.*, 13.*) are CPU-bound, so two cores halve the
# wall time. Each role's summary goes to its own file and is printed in order.
pids=()
for role in "${roles[@]}"; do
    case "$role" in
        server) run_server_role >"$reports/server-summary.txt" 2>&1 & ;;
        client) run_client_role >"$reports/client-summary.txt" 2>&1 & ;;
        *) echo "unknown role $role (server or client)" >&2; exit 2 ;;
    esac
    pids+=($!)
    children+=($!)
done
status=0
for i in "${!roles[@]}"; do
    wait "${pids[$i]}" || status=1
    cat "$reports/${roles[$i]}-summary.txt"
done
exit $status
