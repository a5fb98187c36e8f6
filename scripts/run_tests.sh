#!/usr/bin/env bash
# Runs the whole test suite: unit tests on this machine, container tests that build and run the
# real images (they need a Docker daemon). Creates .venv from requirements/dev.txt on first use.
#   scripts/run_tests.sh                 all tests
#   scripts/run_tests.sh tests/unit -x   any pytest arguments
# BASE_IMAGE and EXTRA_CA_BUNDLE are passed on to the image builds (see docker/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv from requirements/dev.txt (torch is large: a few minutes the first time)"
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements/dev.txt
  echo "$want" > .venv/.requirements.sha
fi
exec .venv/bin/python -m pytest "$@"
