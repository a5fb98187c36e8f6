#!/usr/bin/env bash
# The whole flow on this machine, as SageMaker would run it: make the demo data, build the
# training and serving images, run a training job in the training container with /opt/ml mounted,
# recorded in a local MLflow server, then serve the trained model from the serving container and
# classify a JPEG and a PNG over HTTP.
#
#   scripts/run_local_flow.sh                         the demo, on generated shapes
#   scripts/run_local_flow.sh --data ~/dogImages --hp weights=DEFAULT --hp image_size=224
#                                                     your photos, from ImageNet's weights
#
# Options:
#   --data DIR       labelled photos: train/, valid/ and test/ folders of class folders (default:
#                    demo_data, generated when missing)
#   --work DIR       where the job (its model and reports) and the MLflow store go (default:
#                    local_run)
#   --hp NAME=VALUE  a hyperparameter over scripts/demo_hyperparameters.json (repeatable)
# Needs Docker and python3 with venv; the scripts run from .venv (made on first use, as the tests'
# is: scripts/dev_venv.sh).
# BASE_IMAGE and EXTRA_CA_BUNDLE are passed on to the image builds (see docker/build.sh);
# PORT (default 8080) is where the endpoint listens on this machine; MLFLOW_PORT (default 5000),
# the MLflow server that the training job records itself in.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "run_local_flow.sh: $*" >&2; exit 1; }
data=demo_data work=local_run hp_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --work) work="${2:?--work needs a folder}"; shift 2 ;;
    --hp) hp_args+=(--hp "${2:?--hp needs NAME=VALUE}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -d "$data/train" ] || [ "$data" = demo_data ] || die "$data has no train/ folder: give \
--data a folder with train/, valid/ and test/ folders of class folders"

source scripts/dev_venv.sh
python=.venv/bin/python
rm -rf "$work/job"
mkdir -p "$work"

echo "== 1/4 the data set: $data/"
[ -d "$data/train" ] || "$python" -m scripts.make_demo_data "$data"
[ -d "$data/test" ] || die "$data has no test/ folder: the flow classifies two of its images"
# What step 4 classifies, the test set's first JPEG and first PNG, chosen before the builds so
# that a test set without either fails in seconds. Each list is read to its end (sed, not head):
# under pipefail, a reader that quits early fails the pipeline with sort's SIGPIPE.
samples=()
for pattern in '*.jp*g' '*.png'; do
  sample=$(find "$data/test" -type f -iname "$pattern" | sort | sed -n 1p)
  [ -z "$sample" ] || samples+=("$sample")
done
[ ${#samples[@]} -gt 0 ] || die "$data/test has no JPEG or PNG to classify"
echo "it will classify: ${samples[*]}"

echo "== 2/4 building the training and serving images"
started=$(date +%s)
docker/build.sh train serve
echo "built in $(( $(date +%s) - started )) s"

echo "== 3/4 training in the container (SageMaker's contract: /opt/ml mounted, \`train\`)"
demo_hp=()  # the given --hp come after, and win
while IFS= read -r kv; do demo_hp+=(--hp "$kv"); done < <(
  "$python" -c 'import json; [print(f"{k}={v}") for k, v in json.load(open("scripts/demo_hyperparameters.json")).items()]')
# The job records itself in an MLflow server on this machine, kept in $work/mlflow (a SQLite
# store and the artifacts), where the container reaches it: Docker's bridge address.
mlflow_url=""
gateway=$("$python" -c 'from scripts.local_mlflow import bridge_gateway; print(bridge_gateway())' || true)
if [ -n "$gateway" ]; then
  "$python" -m scripts.local_mlflow --folder "$work/mlflow" --host "$gateway" \
    --port "${MLFLOW_PORT:-5000}" > "$work/mlflow.log" 2>&1 &
  mlflow_pid=$!
  trap 'kill "$mlflow_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 120); do
    mlflow_url=$(sed -n 's/^MLflow at \(http[^ ]*\).*/\1/p' "$work/mlflow.log")
    [ -n "$mlflow_url" ] || ! kill -0 "$mlflow_pid" 2>/dev/null && break
    sleep 1
  done
fi
[ -n "$mlflow_url" ] || echo "(no MLflow server: the job trains without tracking; see $work/mlflow.log)"
started=$(date +%s)
"$python" -m scripts.local_training_job --image byoc-train:latest --data "$data" \
  --job-dir "$work/job" --job-name "demo-$(date +%Y%m%d-%H%M%S)" "${demo_hp[@]}" \
  ${hp_args[@]+"${hp_args[@]}"} \
  ${mlflow_url:+--env "MLFLOW_TRACKING_URI=$mlflow_url" --env MLFLOW_EXPERIMENT_NAME=demo} \
  2>&1 | tee "$work/train.log" | grep -E "#metrics|FAILURE|ERROR|WARNING.*MLflow" || true
[ -f "$work/job/output/success" ] || { echo "training failed:"; cat "$work/job/output/failure"; exit 1; }
echo "trained in $(( $(date +%s) - started )) s; model artifact in $work/job/model"
if [ -n "$mlflow_url" ]; then
  kill "$mlflow_pid" && wait "$mlflow_pid" || true
  # The job logged its run's page at the bridge address; reopened, the server is on this machine's.
  port=${MLFLOW_PORT:-5000}
  page=$(sed -n "s|.*MLflow: run .*: http://[^/]*\(/#/[^ ]*\).*|http://127.0.0.1:$port\1|p" \
    "$work/train.log" | sed -n 1p)
  echo "the job's MLflow run (parameters, metrics by epoch, rule counts, reports, model):"
  echo "  $python -m scripts.local_mlflow --folder $(printf %q "$work/mlflow") --port $port"
  echo "  then open ${page:-http://127.0.0.1:$port}"
fi
"$python" -c 'import json, sys
for v in json.load(open(sys.argv[1])): print("  rule %-28s %s" % (v["rule"], v["status"]))' \
  "$work/job/output/data/rule_report.json"
echo "training report (plots, debugger and profiler rules): $work/job/output/data/training_report.html"
echo "the job's TensorBoard record: tensorboard --logdir $(printf %q "$work/job/output/tensorboard")"

echo "== 4/4 serving the model from the serving container (\`serve\`, /opt/ml/model) and classifying"
"$python" -m scripts.local_endpoint --image byoc-serve:latest --model "$work/job/model" \
  --port "${PORT:-8080}" "${samples[@]}"
