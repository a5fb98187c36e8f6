#!/usr/bin/env bash
# Runs the whole test suite: unit tests on this machine, container tests that build and run the
# real images (they need a Docker daemon). Creates .venv from requirements/dev.txt on first use.
#   scripts/run_tests.sh                 all tests
#   scripts/run_tests.sh tests/unit -x   any pytest arguments
# BASE_IMAGE and EXTRA_CA_BUNDLE are passed on to the image builds (see docker/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/dev_venv.sh
exec .venv/bin/python -m pytest "$@"
