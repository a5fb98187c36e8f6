#!/usr/bin/env bash
# The whole flow on this machine, as SageMaker would run it: build the training image, make the
# demo data, and run a training job in the container with /opt/ml mounted. Prints the metrics.
# Needs Docker and python3 with Pillow and numpy (scripts/run_tests.sh's .venv has them).
# BASE_IMAGE and EXTRA_CA_BUNDLE are passed on to the image build (see docker/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
work=local_run
rm -rf "$work/job"
mkdir -p "$work"

echo "== 1/3 building the training image"
docker/build.sh train

echo "== 2/3 making the demo data set in demo_data/"
[ -d demo_data/train ] || "$python" -m scripts.make_demo_data demo_data

echo "== 3/3 training in the container (SageMaker's contract: /opt/ml mounted, \`train\`)"
hp_args=()
while IFS= read -r kv; do hp_args+=(--hp "$kv"); done < <(
  "$python" -c 'import json; [print(f"{k}={v}") for k, v in json.load(open("scripts/demo_hyperparameters.json")).items()]')
started=$(date +%s)
"$python" -m scripts.local_training_job --image byoc-train:latest --data demo_data \
  --job-dir "$work/job" "${hp_args[@]}" 2>&1 | tee "$work/train.log" | grep -E "#metrics|FAILURE|ERROR" || true
[ -f "$work/job/output/success" ] || { echo "training failed:"; cat "$work/job/output/failure"; exit 1; }
echo "trained in $(( $(date +%s) - started )) s; model artifact in $work/job/model, report in $work/job/output/data"
