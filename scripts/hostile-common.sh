# Shared by scripts/hostile-peers, scripts/many-connections and scripts/soak (sourced,
# not run): release builds, servers on free loopback ports stopped by PID, and the
# server's figures from /proc.
#
# Each server started with start_serve or start_example is recorded in $pids and
# stopped (by PID) on exit.

target="${CARGO_TARGET_DIR:-target}"
# HOSTILE_PROFILE=debug for a quick try of a script itself; figures come from release.
profile="${HOSTILE_PROFILE:-release}"
bin="$target/$profile/wsevents"
hostile="$target/$profile/examples/hostile"
# HOSTILE_BIN=DIR: the `wsevents` and `hostile` binaries in DIR, as they are (no build):
# to measure two builds side by side, or one a shared target directory may overwrite.
if [ -n "${HOSTILE_BIN:-}" ]; then
    bin="$HOSTILE_BIN/wsevents"
    hostile="$HOSTILE_BIN/hostile"
fi
pids=()
tmp=$(mktemp -d)

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

build() {
    [ -z "${HOSTILE_BIN:-}" ] || return 0
    local flag=--release
    [ "$profile" = release ] || flag=""
    cargo build $flag --locked --quiet -p wsevents-cli -p wsevents --bin wsevents --example hostile
}

# Raise the soft descriptor limit to the hard one (the hard one cannot be raised without
# CAP_SYS_RESOURCE); prints the limit now in force.
raise_fd_limit() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ulimit -n
}

# Does `wsevents serve` know this flag (the newer ones may not be merged yet)?
serve_has() {
    "$bin" serve --help 2>/dev/null | grep -q -- "$1"
}

# start_serve NAME ARGS...: `wsevents serve` on a free 127.0.0.1 port; sets
# ${NAME}_pid and ${NAME}_addr.
start_serve() {
    local name=$1
    shift
    local out="$tmp/$name.out"
    : >"$out"
    "$bin" serve --listen 127.0.0.1:0 "$@" >"$out" 2>"$tmp/$name.err" &
    local pid=$!
    pids+=("$pid")
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^wsevents serve: listening on //p' "$out" | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || { echo "serve $* failed: $(cat "$tmp/$name.err")" >&2; return 1; }
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "serve $* printed no address" >&2; return 1; }
    printf -v "${name}_pid" '%s' "$pid"
    printf -v "${name}_addr" '%s' "$addr"
}

# start_flood NAME API BYTES [LIMIT]: the example flood server; sets ${NAME}_pid, ${NAME}_addr.
start_flood() {
    local name=$1
    local out="$tmp/$name.out"
    : >"$out"
    "$hostile" flood-server 127.0.0.1:0 "$2" "$3" ${4:+"$4"} >"$out" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^flood-server listening on //p' "$out" | head -1)
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "flood-server printed no address" >&2; return 1; }
    printf -v "${name}_pid" '%s' "$pid"
    printf -v "${name}_addr" '%s' "$addr"
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Figures of process PID.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# wait_fds PID COUNT LIMIT_S: wait until PID holds COUNT descriptors; prints the seconds
# it took, or "never" after LIMIT_S.
wait_fds() {
    local start now
    start=$(date +%s.%N)
    while :; do
        if [ "$(fds "$1")" -le "$2" ]; then
            now=$(date +%s.%N)
            awk -v a="$start" -v b="$now" 'BEGIN {printf "%.1f", b - a}'
            return
        fi
        now=$(date +%s.%N)
        if awk -v a="$start" -v b="$now" -v l="$3" 'BEGIN {exit !(b - a > l)}'; then
            echo never
            return
        fi
        sleep 0.1
    done
}

# The table: row SCENARIO FIGURES VERDICT; table prints them aligned.
rows=()
row() { rows+=("$1|$2|$3"); printf '  %-34s %s  [%s]\n' "$1" "$2" "$3" >&2; }
table() {
    printf '\n| scenario | figures | result |\n|---|---|---|\n'
    local r
    for r in "${rows[@]}"; do
        IFS='|' read -r a b c <<<"$r"
        printf '| %s | %s | %s |\n' "$a" "$b" "$c"
    done
}
