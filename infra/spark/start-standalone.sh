#!/usr/bin/env bash
# Start a Spark standalone cluster (one master, N workers) from the pyspark wheel, in the background.
#
#   infra/spark/start-standalone.sh                                  # master + 1 worker on 127.0.0.1
#   infra/spark/start-standalone.sh --workers 2 --worker-cores 1     # two 1-core workers on this host
#   infra/spark/start-standalone.sh --host 10.0.0.5 --worker-hosts node1,node2   # workers via ssh
#
# Prints the master URL (spark://HOST:PORT) on stdout once the master's /json/ lists every worker
# ALIVE; progress goes to stderr. Pid files and logs go under the state dir; stop-standalone.sh stops
# everything started here. Details: infra/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Start a Spark standalone master and workers from the pyspark wheel (spark-class), in the background.

Options:
  --host HOST            address the master binds to and workers use (default: 127.0.0.1)
  --port PORT            master RPC port (default: 7077)
  --webui-port PORT      master web UI port; /json/ there is polled (default: 8080); local workers
                         take the next ports
  --workers N            workers on this host (default: 1; 0 with --worker-hosts for remote only)
  --worker-cores C       cores per worker (default: this host's cores / N; remote: all of theirs)
  --worker-memory M      memory per worker, e.g. 8g (default: (RAM - 1 GB) / N; remote: Spark's default)
  --worker-hosts H1,H2   also start one worker on each host via ssh (same SPARK_HOME path there;
                         --host must then be an address those hosts reach)
  --state-dir DIR        pid files, logs, worker dirs (default: \${TMPDIR:-/tmp}/cc-refinery-spark-\$USER)
  --python PATH          Python whose pyspark provides SPARK_HOME (default: \$VIRTUAL_ENV/bin/python,
                         else the repository's .venv, else python3); ignored if SPARK_HOME is set
  --timeout SECONDS      wait this long for the master and workers (default: 90)
  -h, --help             this help

Environment: SPARK_HOME (else from pyspark), JAVA_HOME (else java on PATH), SPARK_WORKER_OPTS /
SPARK_MASTER_OPTS (extra -D settings, e.g. -Dspark.worker.cleanup.enabled=true).
EOF
}

HOST=127.0.0.1
PORT=7077
WEBUI_PORT=8080
WORKERS=1
WORKER_CORES=""
WORKER_MEMORY=""
WORKER_HOSTS=""
STATE_DIR="${TMPDIR:-/tmp}/cc-refinery-spark-${USER:-$(id -un)}"
PYTHON=""
TIMEOUT=90

die() {
    echo "start-standalone: $*" >&2
    exit 1
}
log() { echo "start-standalone: $*" >&2; }

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) need_value "$@"; HOST="$2"; shift 2 ;;
        --port) need_value "$@"; PORT="$2"; shift 2 ;;
        --webui-port) need_value "$@"; WEBUI_PORT="$2"; shift 2 ;;
        --workers) need_value "$@"; WORKERS="$2"; shift 2 ;;
        --worker-cores) need_value "$@"; WORKER_CORES="$2"; shift 2 ;;
        --worker-memory) need_value "$@"; WORKER_MEMORY="$2"; shift 2 ;;
        --worker-hosts) need_value "$@"; WORKER_HOSTS="$2"; shift 2 ;;
        --state-dir) need_value "$@"; STATE_DIR="$2"; shift 2 ;;
        --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
        --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

for n in PORT WEBUI_PORT WORKERS TIMEOUT; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "--$(echo "$n" | tr 'A-Z_' 'a-z-') must be a number, got ${!n}"
done
[[ -z "$WORKER_CORES" || "$WORKER_CORES" =~ ^[1-9][0-9]*$ ]] || die "--worker-cores must be a positive number"
IFS=',' read -r -a REMOTE_HOSTS <<<"$WORKER_HOSTS"
TOTAL_WORKERS=$((WORKERS + ${#REMOTE_HOSTS[@]}))
[[ $TOTAL_WORKERS -ge 1 ]] || die "no workers: give --workers N or --worker-hosts"
if [[ ${#REMOTE_HOSTS[@]} -gt 0 && ("$HOST" == 127.* || "$HOST" == localhost) ]]; then
    die "--worker-hosts needs --host set to an address the worker hosts can reach, not $HOST"
fi

# The Python that finds SPARK_HOME and reads the master's JSON.
if [[ -z "$PYTHON" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x "$REPO/.venv/bin/python" ]]; then
        PYTHON="$REPO/.venv/bin/python"
    else
        PYTHON="$(command -v python3)" || die "no python3 found; pass --python"
    fi
fi
if [[ -z "${SPARK_HOME:-}" ]]; then
    SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" ||
        die "$PYTHON cannot import pyspark: pip install 'cc-refinery[spark]' or set SPARK_HOME"
fi
export SPARK_HOME
SPARK_CLASS="$SPARK_HOME/bin/spark-class"
[[ -x "$SPARK_CLASS" ]] || die "$SPARK_CLASS not found or not executable"
command -v java >/dev/null 2>&1 || [[ -n "${JAVA_HOME:-}" ]] || die "no java on PATH and JAVA_HOME unset (Spark needs Java 17+)"

MASTER_URL="spark://$HOST:$PORT"
JSON_URL="http://$HOST:$WEBUI_PORT/json/"
LOG_DIR="$STATE_DIR/logs"
PID_DIR="$STATE_DIR/pids"
WORK_DIR="$STATE_DIR/work"

# Number of ALIVE workers the master lists, or -1 if the master does not answer.
alive_workers() {
    "$PYTHON" - "$JSON_URL" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        state = json.load(r)
except Exception:
    print(-1)
else:
    print(sum(w.get("state") == "ALIVE" for w in state.get("workers", [])) if state.get("status") == "ALIVE" else -1)
PY
}

pid_alive() { kill -0 "$1" 2>/dev/null; }

# Fail fast on a cluster already running from this state dir or another master on these ports.
if compgen -G "$PID_DIR/*.pid" >/dev/null; then
    for f in "$PID_DIR"/*.pid; do
        where="" pid=""
        read -r where pid <"$f" || true
        if [[ "$where" != local ]] || pid_alive "$pid"; then
            die "a cluster from $STATE_DIR is still running ($f); stop it first: $HERE/stop-standalone.sh --state-dir $STATE_DIR"
        fi
    done
    rm -f "$PID_DIR"/*.pid
fi
[[ "$(alive_workers)" == -1 ]] || die "a Spark master already answers at $JSON_URL; pick other ports (--port, --webui-port)"

mkdir -p "$LOG_DIR" "$PID_DIR" "$WORK_DIR"

# Defaults per local worker: a share of this host's cores and memory.
if [[ $WORKERS -gt 0 ]]; then
    if [[ -z "$WORKER_CORES" ]]; then
        WORKER_CORES=$(($(nproc) / WORKERS))
        [[ $WORKER_CORES -ge 1 ]] || WORKER_CORES=1
    fi
    if [[ -z "$WORKER_MEMORY" ]]; then
        total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
        mem_mb=$(((total_mb - 1024) / WORKERS))
        [[ $mem_mb -ge 512 ]] || mem_mb=512
        WORKER_MEMORY="${mem_mb}m"
    fi
fi

started=()
cleanup_on_failure() {
    log "giving up; last lines of the logs:"
    for f in "$LOG_DIR"/*.log; do
        [[ -f "$f" ]] && { echo "==> $f <==" >&2; tail -n 20 "$f" >&2; }
    done
    if [[ ${#started[@]} -gt 0 ]]; then
        "$HERE/stop-standalone.sh" --state-dir "$STATE_DIR" >&2 || true
    fi
    exit 1
}

# Start a daemon detached from this shell (own session, no terminal, logs to a file); record "local PID".
start_local() {
    local name="$1"
    shift
    # setsid: Ctrl-C in the caller's terminal does not reach the cluster; spark-class execs java, so $! is the JVM
    SPARK_WORKER_DIR="$WORK_DIR" nohup setsid "$SPARK_CLASS" "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo "local $!" >"$PID_DIR/$name.pid"
    started+=("$name")
    log "started $name (pid $!), log $LOG_DIR/$name.log"
}

start_local master org.apache.spark.deploy.master.Master --host "$HOST" --port "$PORT" --webui-port "$WEBUI_PORT"

deadline=$((SECONDS + TIMEOUT))
read -r _ master_pid <"$PID_DIR/master.pid"
until [[ "$(alive_workers)" != -1 ]]; do
    pid_alive "$master_pid" || { log "the master exited"; cleanup_on_failure; }
    [[ $SECONDS -lt $deadline ]] || { log "the master did not answer at $JSON_URL within ${TIMEOUT}s"; cleanup_on_failure; }
    sleep 1
done
log "master up: $MASTER_URL (web UI http://$HOST:$WEBUI_PORT)"

for ((i = 1; i <= WORKERS; i++)); do
    start_local "worker-$i" org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
        --host "$HOST" --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
        --webui-port $((WEBUI_PORT + i)) --work-dir "$WORK_DIR/worker-$i"
done

for remote in "${REMOTE_HOSTS[@]}"; do
    [[ -n "$remote" ]] || continue
    opts=()
    [[ -n "$WORKER_CORES" ]] && opts+=(--cores "$WORKER_CORES")
    [[ -n "$WORKER_MEMORY" ]] && opts+=(--memory "$WORKER_MEMORY")
    # the same paths on the remote host (a shared filesystem or an identical install); its logs stay there
    # (separate statements: "mkdir && daemon &" would background a subshell that holds ssh's stdout open)
    remote_cmd="mkdir -p '$LOG_DIR' '$WORK_DIR' || exit 1
SPARK_HOME='$SPARK_HOME' nohup setsid '$SPARK_CLASS' org.apache.spark.deploy.worker.Worker '$MASTER_URL' \
--work-dir '$WORK_DIR/$remote' ${opts[*]:-} >'$LOG_DIR/worker-$remote.log' 2>&1 </dev/null &
echo \$!"
    remote_pid="$(ssh -o BatchMode=yes "$remote" "$remote_cmd")" || { log "ssh $remote failed"; cleanup_on_failure; }
    echo "$remote $remote_pid" >"$PID_DIR/worker-$remote.pid"
    started+=("worker-$remote")
    log "started worker on $remote (pid $remote_pid), log $remote:$LOG_DIR/worker-$remote.log"
done

while true; do
    alive="$(alive_workers)"
    [[ "$alive" -ge $TOTAL_WORKERS ]] && break
    for ((i = 1; i <= WORKERS; i++)); do
        read -r _ pid <"$PID_DIR/worker-$i.pid"
        pid_alive "$pid" || { log "worker-$i exited"; cleanup_on_failure; }
    done
    [[ $SECONDS -lt $deadline ]] || {
        log "only $alive of $TOTAL_WORKERS workers registered within ${TIMEOUT}s"
        cleanup_on_failure
    }
    sleep 1
done

echo "$MASTER_URL" >"$STATE_DIR/master-url"
log "$alive worker(s) ALIVE; state $JSON_URL"
log "stop with: $HERE/stop-standalone.sh --state-dir $STATE_DIR"
echo "$MASTER_URL"
