#!/usr/bin/env bash
# Build the project's images locally.
#   docker/build.sh [train] [serve] [serve-gpu]     (default: train serve)
#     train       docker/train.Dockerfile
#     serve       docker/serve.Dockerfile, stage cpu (ONNX Runtime, no torch)
#     serve-gpu   docker/serve.Dockerfile, stage gpu (PyTorch on CUDA)
# Environment:
#   BASE_IMAGE        base of every image (default python:3.11-slim)
#   EXTRA_CA_BUNDLE   a CA file to trust during builds and in the images (TLS-intercepting proxy)
#   TORCH_INDEX_URL   a wheel index for torch/torchvision (e.g. https://download.pytorch.org/whl/cpu)
#   IMAGE_PREFIX      image names are ${IMAGE_PREFIX}-<target> (default byoc)
#   TAG               (default latest)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(train serve)
prefix="${IMAGE_PREFIX:-byoc}"
tag="${TAG:-latest}"

command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "cannot reach the Docker daemon: is it running, and may you use it?" >&2; exit 1; }

ca_copy=docker/extra-ca/extra-ca.crt
if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then
  [ -f "$EXTRA_CA_BUNDLE" ] || { echo "EXTRA_CA_BUNDLE=$EXTRA_CA_BUNDLE is not a file" >&2; exit 1; }
  cp "$EXTRA_CA_BUNDLE" "$ca_copy"
  trap 'rm -f "$ca_copy"' EXIT
fi

for target in "${targets[@]}"; do
  case "$target" in
    train) dockerfile=docker/train.Dockerfile; stage=() ;;
    serve) dockerfile=docker/serve.Dockerfile; stage=(--target cpu) ;;
    serve-gpu) dockerfile=docker/serve.Dockerfile; stage=(--target gpu) ;;
    *) echo "unknown target $target: choose train, serve or serve-gpu" >&2; exit 1 ;;
  esac
  image="${prefix}-${target}:${tag}"
  echo "building $image from $dockerfile ${stage[*]}"
  # --network host: pip inside the build uses the host's network path (proxies, VPNs).
  args=(--build-arg BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}")
  [ -z "${TORCH_INDEX_URL:-}" ] || args+=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
  docker build --network host -f "$dockerfile" "${stage[@]}" "${args[@]}" -t "$image" .
done
