#!/usr/bin/env bash
# Submit a cc-refinery run to Spark on Kubernetes in cluster mode: the driver and executors are pods of the
# infra/k8s/Dockerfile image, the run's output is on a ReadWriteMany PersistentVolumeClaim mounted in all of them.
#
#   infra/k8s/spark-submit.sh --master k8s://https://k8s-api.example:6443 --image registry/cc-refinery-spark:0.1.0 \
#       -- --dump CC-MAIN-2024-22 --limit-warcs 8
#   infra/k8s/spark-submit.sh --dry-run -- --dump CC-MAIN-2024-22       # print the command only
#
# Arguments after `--` go to `refinery run --engine spark --output <mount>/out` inside the driver pod.
# spark-submit waits for the application and exits non-zero if it fails; `kubectl logs -f <driver pod>`
# follows it. Details and prerequisites (namespace, service account, PVC): infra/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options] [-- refinery run arguments]

Options (environment variable in brackets):
  --master URL            Kubernetes API as k8s://https://HOST:PORT [K8S_MASTER]
                          (default: k8s://https://kubernetes.default.svc:443, i.e. from inside the cluster)
  --namespace NS          namespace of the driver and executors [NAMESPACE] (default: cc-refinery)
  --image IMAGE           image built from infra/k8s/Dockerfile [IMAGE] (default: cc-refinery-spark:latest)
  --service-account SA    driver's service account, allowed to create pods [SERVICE_ACCOUNT] (default: spark)
  --pvc NAME              ReadWriteMany claim holding the output [PVC] (default: cc-refinery-data)
  --mount PATH            where the claim is mounted in every pod [MOUNT] (default: /data)
  --output PATH           root folder for runs, on the claim [OUTPUT] (default: <mount>/out)
  --executors N           executor pods [EXECUTORS] (default: 4)
  --executor-cores C      cores per executor = WARC files processed at once per pod [EXECUTOR_CORES] (default: 4)
  --executor-memory M     heap per executor [EXECUTOR_MEMORY] (default: 4g)
  --python-memory M       Python workers' memory per executor, outside the heap [PYTHON_MEMORY] (default: 8g)
  --driver-memory M       driver heap [DRIVER_MEMORY] (default: 4g)
  --name NAME             application and pod name prefix [APP_NAME] (default: cc-refinery)
  --conf KEY=VALUE        extra Spark setting (repeatable)
  --dry-run               print the spark-submit command instead of running it
  -h, --help              this help

spark-submit comes from SPARK_HOME, else from the pyspark of the repository's .venv (or python3).
EOF
}

K8S_MASTER="${K8S_MASTER:-k8s://https://kubernetes.default.svc:443}"
NAMESPACE="${NAMESPACE:-cc-refinery}"
IMAGE="${IMAGE:-cc-refinery-spark:latest}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-spark}"
PVC="${PVC:-cc-refinery-data}"
MOUNT="${MOUNT:-/data}"
OUTPUT="${OUTPUT:-}"
EXECUTORS="${EXECUTORS:-4}"
EXECUTOR_CORES="${EXECUTOR_CORES:-4}"
EXECUTOR_MEMORY="${EXECUTOR_MEMORY:-4g}"
PYTHON_MEMORY="${PYTHON_MEMORY:-8g}"
DRIVER_MEMORY="${DRIVER_MEMORY:-4g}"
APP_NAME="${APP_NAME:-cc-refinery}"
DRY_RUN=0
EXTRA_CONF=()

die() {
    echo "k8s/spark-submit: $*" >&2
    exit 1
}
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --master) need_value "$@"; K8S_MASTER="$2"; shift 2 ;;
        --namespace) need_value "$@"; NAMESPACE="$2"; shift 2 ;;
        --image) need_value "$@"; IMAGE="$2"; shift 2 ;;
        --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
        --pvc) need_value "$@"; PVC="$2"; shift 2 ;;
        --mount) need_value "$@"; MOUNT="$2"; shift 2 ;;
        --output) need_value "$@"; OUTPUT="$2"; shift 2 ;;
        --executors) need_value "$@"; EXECUTORS="$2"; shift 2 ;;
        --executor-cores) need_value "$@"; EXECUTOR_CORES="$2"; shift 2 ;;
        --executor-memory) need_value "$@"; EXECUTOR_MEMORY="$2"; shift 2 ;;
        --python-memory) need_value "$@"; PYTHON_MEMORY="$2"; shift 2 ;;
        --driver-memory) need_value "$@"; DRIVER_MEMORY="$2"; shift 2 ;;
        --name) need_value "$@"; APP_NAME="$2"; shift 2 ;;
        --conf) need_value "$@"; EXTRA_CONF+=(--conf "$2"); shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option $1 (refinery arguments go after --; see --help)" ;;
    esac
done
[[ "$K8S_MASTER" == k8s://* ]] || die "--master must look like k8s://https://HOST:PORT, got $K8S_MASTER"
OUTPUT="${OUTPUT:-$MOUNT/out}"

if [[ -z "${SPARK_HOME:-}" ]]; then
    python="$REPO/.venv/bin/python"
    [[ -x "$python" ]] || python="$(command -v python3 || echo python3)"
    SPARK_HOME="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" ||
        die "no SPARK_HOME and no pyspark to take it from: pip install 'cc-refinery[spark]' or set SPARK_HOME"
fi

# In the image (infra/k8s/Dockerfile): the project's code zip and entry point, as local:// files.
DIST=local:///opt/cc-refinery/dist
# the claim, mounted at the same path in the driver and in every executor
VOLUMES=()
for role in driver executor; do
    VOLUMES+=(
        --conf "spark.kubernetes.$role.volumes.persistentVolumeClaim.data.options.claimName=$PVC"
        --conf "spark.kubernetes.$role.volumes.persistentVolumeClaim.data.mount.path=$MOUNT"
        --conf "spark.kubernetes.$role.volumes.persistentVolumeClaim.data.mount.readOnly=false"
    )
done

CMD=(
    "$SPARK_HOME/bin/spark-submit"
    --master "$K8S_MASTER"
    --deploy-mode cluster
    --name "$APP_NAME"
    --conf "spark.kubernetes.namespace=$NAMESPACE"
    --conf "spark.kubernetes.container.image=$IMAGE"
    --conf "spark.kubernetes.container.image.pullPolicy=IfNotPresent"
    --conf "spark.kubernetes.authenticate.driver.serviceAccountName=$SERVICE_ACCOUNT"
    "${VOLUMES[@]}"
    --conf "spark.executor.instances=$EXECUTORS"
    --conf "spark.executor.cores=$EXECUTOR_CORES"
    --conf "spark.executor.memory=$EXECUTOR_MEMORY"
    --conf "spark.executor.pyspark.memory=$PYTHON_MEMORY"
    --conf "spark.driver.memory=$DRIVER_MEMORY"
    --conf "spark.pyspark.python=/opt/venv/bin/python"
    --conf "spark.pyspark.driver.python=/opt/venv/bin/python"
    # a lost executor pod's tasks are retried elsewhere; its parts are rewritten atomically
    --conf "spark.task.maxFailures=4"
    "${EXTRA_CONF[@]}"
    --py-files "$DIST/cc_refinery-code.zip"
    "$DIST/refinery_main.py"
    run --engine spark --output "$OUTPUT" --no-progress "$@"
)

if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
exec "${CMD[@]}"
