#!/usr/bin/env bash
# The whole flow on this machine, as SageMaker would run it: build the training and serving
# images, make the demo data, run a training job in the training container with /opt/ml mounted,
# then serve the trained model from the serving container and classify a JPEG and a PNG over HTTP.
# Needs Docker and python3 with venv; the scripts run from .venv (made on first use, as the tests'
# is: scripts/dev_venv.sh).
# BASE_IMAGE and EXTRA_CA_BUNDLE are passed on to the image builds (see docker/build.sh);
# PORT (default 8080) is where the endpoint listens on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/dev_venv.sh
python=.venv/bin/python
work=local_run
rm -rf "$work/job"
mkdir -p "$work"

echo "== 1/4 building the training and serving images"
started=$(date +%s)
docker/build.sh train serve
echo "built in $(( $(date +%s) - started )) s"

echo "== 2/4 making the demo data set in demo_data/"
[ -d demo_data/train ] || "$python" -m scripts.make_demo_data demo_data

echo "== 3/4 training in the container (SageMaker's contract: /opt/ml mounted, \`train\`)"
hp_args=()
while IFS= read -r kv; do hp_args+=(--hp "$kv"); done < <(
  "$python" -c 'import json; [print(f"{k}={v}") for k, v in json.load(open("scripts/demo_hyperparameters.json")).items()]')
started=$(date +%s)
"$python" -m scripts.local_training_job --image byoc-train:latest --data demo_data \
  --job-dir "$work/job" "${hp_args[@]}" 2>&1 | tee "$work/train.log" | grep -E "#metrics|FAILURE|ERROR" || true
[ -f "$work/job/output/success" ] || { echo "training failed:"; cat "$work/job/output/failure"; exit 1; }
echo "trained in $(( $(date +%s) - started )) s; model artifact in $work/job/model"
"$python" -c 'import json, sys
for v in json.load(open(sys.argv[1])): print("  rule %-28s %s" % (v["rule"], v["status"]))' \
  "$work/job/output/data/rule_report.json"
echo "training report (plots, debugger and profiler rules): $work/job/output/data/training_report.html"
echo "the job's TensorBoard record: tensorboard --logdir $work/job/output/tensorboard"

echo "== 4/4 serving the model from the serving container (\`serve\`, /opt/ml/model) and classifying"
"$python" -m scripts.local_endpoint --image byoc-serve:latest --model "$work/job/model" \
  --port "${PORT:-8080}" \
  "$(ls demo_data/test/004.Yellow_ring/*.jpg | head -1)" \
  "$(ls demo_data/test/002.Green_square/*.png | head -1)"
