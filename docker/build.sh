#!/usr/bin/env bash
# Build the project's images locally.
#   docker/build.sh [train] [serve] [serve-gpu]     (default: train serve)
#     train       docker/train.Dockerfile
#     serve       docker/serve.Dockerfile, stage cpu (ONNX Runtime, no torch)
#     serve-gpu   docker/serve.Dockerfile, stage gpu (PyTorch on CUDA)
# Every image is built for one platform, said explicitly: PLATFORM, else DOCKER_DEFAULT_PLATFORM,
# else the Docker daemon's own (a Mac's arm64, this kind of machine's amd64), so that local runs
# are native. build_and_push.sh builds what SageMaker runs: amd64, and arm64 for the CPU image.
# Environment:
#   PLATFORM          linux/amd64 or linux/arm64
#   BASE_IMAGE        base of every image (default python:3.11-slim, which Docker Hub has for both)
#   BASE_IMAGE_ARM64  base of a linux/arm64 build (default BASE_IMAGE): a local stand-in base
#                     holds one architecture (docker/build_stand_in_base.sh NAME arm64)
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
platform="${PLATFORM:-${DOCKER_DEFAULT_PLATFORM:-$(docker version -f '{{.Server.Os}}/{{.Server.Arch}}')}}"
case "$platform" in
  linux/amd64) base="${BASE_IMAGE:-python:3.11-slim}" ;;
  linux/arm64|linux/arm64/v8) platform=linux/arm64; base="${BASE_IMAGE_ARM64:-${BASE_IMAGE:-python:3.11-slim}}" ;;
  *) echo "platform $platform: linux/amd64 or linux/arm64" >&2; exit 1 ;;
esac
# Docker's classic builder keeps one platform per tag and will not pull over it: a base present
# for another platform is pulled for this one first.
have=$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$base" 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" != "$platform" ]; then
  docker pull -q --platform "$platform" "$base" >/dev/null 2>&1 || {
    echo "base image $base is $have here and cannot be pulled for $platform: set BASE_IMAGE_ARM64" \
         "(docker/build_stand_in_base.sh NAME arm64 makes one)" >&2; exit 1; }
fi

ca_copy=docker/extra-ca/extra-ca.crt
if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then
  [ -f "$EXTRA_CA_BUNDLE" ] || { echo "EXTRA_CA_BUNDLE=$EXTRA_CA_BUNDLE is not a file" >&2; exit 1; }
  cp "$EXTRA_CA_BUNDLE" "$ca_copy"
  trap 'rm -f "$ca_copy"' EXIT
fi

# The commit the training image is built from (-dirty with uncommitted changes): a tag of every
# MLflow run. Empty outside a git checkout.
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
if [ -n "$revision" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi

source docker/buildkit.sh
read -r -a buildkit <<< "$(buildkit_options)"

for target in "${targets[@]}"; do
  case "$target" in
    train) dockerfile=docker/train.Dockerfile; stage=() ;;
    serve) dockerfile=docker/serve.Dockerfile; stage=(--target cpu) ;;
    serve-gpu) dockerfile=docker/serve.Dockerfile; stage=(--target gpu) ;;
    *) echo "unknown target $target: choose train, serve or serve-gpu" >&2; exit 1 ;;
  esac
  image="${prefix}-${target}:${tag}"
  echo "building $image ($platform) from $dockerfile ${stage[*]:-}"
  # --network host: pip inside the build uses the host's network path (proxies, VPNs).
  args=(--platform "$platform" --build-arg BASE_IMAGE="$base")
  [ -z "${TORCH_INDEX_URL:-}" ] || args+=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
  [ "$target" != train ] || args+=(--build-arg GIT_REVISION="$revision")
  # ${a[@]+"${a[@]}"}: an empty array, under bash 3.2's set -u (macOS's bash)
  docker build --network host -f "$dockerfile" ${stage[@]+"${stage[@]}"} "${args[@]}" \
    ${buildkit[@]+"${buildkit[@]}"} -t "$image" .
done
