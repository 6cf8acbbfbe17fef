#!/usr/bin/env bash
# Stop a Spark standalone cluster started by start-standalone.sh: workers first, then the master, by pid file.
#
#   infra/spark/stop-standalone.sh                       # the default state dir
#   infra/spark/stop-standalone.sh --state-dir /tmp/my-spark
#
# Only processes named in the pid files are signalled, and a local pid only if it is still a Spark
# daemon (a recycled pid is left alone). SIGTERM first (a worker then kills its executors), SIGKILL
# after --timeout seconds. Logs and worker dirs stay in the state dir.
set -euo pipefail

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Stop the Spark master and workers that start-standalone.sh started (pid files in the state dir).

Options:
  --state-dir DIR      as given to start-standalone.sh (default: \${TMPDIR:-/tmp}/cc-refinery-spark-\$USER)
  --timeout SECONDS    wait this long after SIGTERM before SIGKILL (default: 20)
  -h, --help           this help
EOF
}

STATE_DIR="${TMPDIR:-/tmp}/cc-refinery-spark-${USER:-$(id -un)}"
TIMEOUT=20

die() {
    echo "stop-standalone: $*" >&2
    exit 1
}
log() { echo "stop-standalone: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --state-dir) [[ -n "${2:-}" ]] || die "--state-dir needs a value"; STATE_DIR="$2"; shift 2 ;;
        --timeout) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--timeout needs a number"; TIMEOUT="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

PID_DIR="$STATE_DIR/pids"
if ! compgen -G "$PID_DIR/*.pid" >/dev/null; then
    log "nothing to stop: no pid files in $PID_DIR"
    exit 0
fi

# Whether local pid $1 is still a Spark standalone daemon (not a pid reused by something else).
is_spark_daemon() {
    [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'org\.apache\.spark\.deploy\.'
}

# Whether pid $1 exists and is not a zombie (an init that reaps slowly must not make us wait).
is_running() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

stop_local() {
    local name="$1" pid="$2"
    if ! is_spark_daemon "$pid"; then
        log "$name (pid $pid) is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + TIMEOUT))
    # until the process is gone (its cmdline empties while the JVM exits, so wait on the pid itself)
    while is_running "$pid" && [[ $SECONDS -lt $deadline ]]; do
        sleep 0.5
    done
    if is_spark_daemon "$pid"; then
        log "$name (pid $pid) still running after ${TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
}

stop_remote() {
    local name="$1" host="$2" pid="$3"
    # the same checks as stop_local, run on the worker's host
    ssh -o BatchMode=yes "$host" "
        p=$pid
        grep -q 'org.apache.spark.deploy.' /proc/\$p/cmdline 2>/dev/null || { echo 'not running'; exit 0; }
        kill -TERM \$p; i=0
        while [ -e /proc/\$p ] && [ \"\$(awk '{print \$3}' /proc/\$p/stat 2>/dev/null)\" != Z ] && [ \$i -lt $((TIMEOUT * 2)) ]; do
            sleep 0.5; i=\$((i + 1)); done
        grep -q 'org.apache.spark.deploy.' /proc/\$p/cmdline 2>/dev/null && kill -KILL \$p; echo stopped" >&2 ||
        log "ssh $host failed; stop $name (pid $pid) there by hand"
    log "stopped $name on $host (pid $pid)"
}

# workers before the master, so none of them logs a lost master on the way down
for f in "$PID_DIR"/worker-*.pid "$PID_DIR"/master.pid; do
    [[ -f "$f" ]] || continue
    name="$(basename "$f" .pid)"
    where="" pid=""
    read -r where pid <"$f" || true
    if [[ ! "$pid" =~ ^[0-9]+$ ]]; then
        log "ignoring $f: no pid in it"
    elif [[ "$where" == local ]]; then
        stop_local "$name" "$pid"
    else
        stop_remote "$name" "$where" "$pid"
    fi
    rm -f "$f"
done
rm -f "$STATE_DIR/master-url"
log "logs kept in $STATE_DIR/logs"
