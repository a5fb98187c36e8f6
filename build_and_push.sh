#!/usr/bin/env bash
# Build the training and serving images, tag them with this version and `latest`, and push them
# to Amazon ECR (creating the repositories when missing) or to any other registry.
#
#   ./build_and_push.sh                                  all images to ECR (account and region from the AWS CLI)
#   ./build_and_push.sh --region eu-west-1 train serve   some images, another region
#   ./build_and_push.sh --registry registry.example.com/ml train serve
#   ./build_and_push.sh --dry-run                        print the commands, change nothing
#
# Options:
#   --region R       ECR region (default: AWS_REGION, AWS_DEFAULT_REGION, then `aws configure get region`)
#   --account A      AWS account id (default: from `aws sts get-caller-identity`)
#   --registry R     push to R/<image> instead of ECR (you are logged in to R already)
#   --tag T          version tag (default: the git revision, e.g. 3f2c1a9 or 3f2c1a9-dirty)
#   --no-build       push images built earlier under the same version tag (serve: T-amd64 and
#                    T-arm64), which must be of the architectures below
#   --dry-run        print every command that would change something, run none of them
# Images: train, serve (CPU), serve-gpu (default: all three). Repositories are named
# ${IMAGE_PREFIX:-byoc}-<image>. BASE_IMAGE, BASE_IMAGE_ARM64, EXTRA_CA_BUNDLE and
# TORCH_INDEX_URL reach the builds (docker/build.sh).
# Whatever machine builds them (a Mac builds arm64 by default), every image is built for what
# SageMaker runs it on: train and serve-gpu for linux/amd64 (SageMaker trains, and serves GPUs,
# on x86); serve for linux/amd64 and linux/arm64 (Graviton endpoints: ml.c7g, ml.m6g, ...),
# pushed as one tag that is a manifest list of both. Another architecture's build runs under
# emulation (Docker Desktop has it; on Linux, qemu-user-static and binfmt-support).
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "build_and_push.sh: $*" >&2; exit 1; }
region="" account="" registry="" tag="" build=1 dry_run=0 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --region) region="${2:?--region needs a value}"; shift 2 ;;
    --account) account="${2:?--account needs a value}"; shift 2 ;;
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    train|serve|serve-gpu) targets+=("$1"); shift ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(train serve serve-gpu)
prefix="${IMAGE_PREFIX:-byoc}"

# Run a command that changes something, or only print it with --dry-run.
run() { if [ "$dry_run" = 1 ]; then echo "+ $*"; else "$@"; fi; }

command -v docker >/dev/null || die "docker is not installed: https://docs.docker.com/engine/install/"
if [ "$dry_run" = 0 ]; then
  docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon: is it running, and may you use it?"
fi

if [ -z "$tag" ]; then
  tag=$(git rev-parse --short HEAD 2>/dev/null || echo dev)
  [ -z "$(git status --porcelain 2>/dev/null)" ] || tag="$tag-dirty"
fi

if [ -z "$registry" ]; then
  command -v aws >/dev/null || die "the AWS CLI is not installed (https://aws.amazon.com/cli/); or push elsewhere with --registry"
  region="${region:-${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}}"
  [ -n "$region" ] || die "no AWS region: pass --region, or set AWS_REGION, or run \`aws configure\`"
  if [ -z "$account" ]; then
    account=$(aws sts get-caller-identity --region "$region" --query Account --output text 2>/dev/null) \
      || die "no usable AWS credentials (aws sts get-caller-identity failed): run \`aws configure\`, set AWS_PROFILE, or pass --registry"
  fi
  domain=amazonaws.com
  [[ "$region" == cn-* ]] && domain=amazonaws.com.cn
  registry="$account.dkr.ecr.$region.$domain"
  echo "pushing to ECR: $registry"
  for target in "${targets[@]}"; do
    repository="$prefix-$target"
    if ! aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1; then
      run aws ecr create-repository --region "$region" --repository-name "$repository" \
        --image-scanning-configuration scanOnPush=true --output text --query repository.repositoryUri
    fi
  done
  if [ "$dry_run" = 1 ]; then
    echo "+ aws ecr get-login-password --region $region | docker login --username AWS --password-stdin $registry"
  else
    aws ecr get-login-password --region "$region" \
      | docker login --username AWS --password-stdin "$registry" >/dev/null \
      || die "docker login to $registry failed"
  fi
else
  registry="${registry%/}"
  echo "pushing to $registry"
fi

architectures() { if [ "$1" = serve ]; then echo "amd64 arm64"; else echo amd64; fi; }
# A local registry on loopback speaks plain HTTP (Docker trusts it); docker manifest must be told.
insecure=()
case "$registry" in 127.0.0.1[:/]*|localhost[:/]*) insecure=(--insecure) ;; esac

# SageMaker takes Docker's media types only: CreateModel and CreateTrainingJob refuse OCI's
# ("Unsupported manifest media type application/vnd.oci.image.manifest.v1+json"). What was pushed
# is read back from the registry and checked. (scripts/platforms.py checks the same before every
# launch.)
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
DOCKER_MANIFEST_LIST=application/vnd.docker.distribution.manifest.list.v2+json
check_pushed() {  # REFERENCE MEDIA_TYPE
  [ "$dry_run" = 0 ] || return 0
  local inspected found
  inspected=$(docker manifest inspect ${insecure[@]+"${insecure[@]}"} "$1" 2>&1) \
    || die "cannot read $1 back from the registry: $inspected"
  found=$(sed -n 's/^[[:space:]]*"mediaType": *"\([^"]*\)".*/\1/p' <<< "$inspected" | sed -n 1p)
  [ "$found" = "$2" ] || die "$1 is in the registry as ${found:-a manifest without a media type}," \
    "which SageMaker refuses (it takes $2): BuildKit's provenance attestations make an OCI index;" \
    "build the image with this script (it turns them off), not with --no-build on an image" \
    "built elsewhere"
}
push() {  # LOCAL_IMAGE REMOTE_REFERENCE
  run docker tag "$1" "$2"
  run docker push --quiet "$2"
  check_pushed "$2" "$DOCKER_MANIFEST"
}

for target in "${targets[@]}"; do
  read -r -a archs <<< "$(architectures "$target")"
  remote="$registry/$prefix-$target"
  for arch in "${archs[@]}"; do
    local_tag="$tag"
    [ ${#archs[@]} = 1 ] || local_tag="$tag-$arch"
    if [ "$build" = 1 ]; then
      run env IMAGE_PREFIX="$prefix" TAG="$local_tag" PLATFORM="linux/$arch" docker/build.sh "$target"
    fi
    local_image="$prefix-$target:$local_tag"
    if [ "$dry_run" = 0 ]; then
      built=$(docker image inspect -f '{{.Architecture}}' "$local_image" 2>/dev/null) \
        || die "no local image $local_image: build it (drop --no-build)"
      [ "$built" = "$arch" ] || die "$local_image is $built, and SageMaker runs $target on $arch: build it again (drop --no-build)"
    fi
    if [ ${#archs[@]} = 1 ]; then
      for remote_tag in "$tag" latest; do push "$local_image" "$remote:$remote_tag"; done
    else
      push "$local_image" "$remote:$local_tag"
    fi
  done
  if [ ${#archs[@]} -gt 1 ]; then  # one tag over every architecture's image
    for remote_tag in "$tag" latest; do
      run docker manifest create --amend ${insecure[@]+"${insecure[@]}"} "$remote:$remote_tag" \
        $(for arch in "${archs[@]}"; do echo "$remote:$tag-$arch"; done)
      run docker manifest push --purge ${insecure[@]+"${insecure[@]}"} "$remote:$remote_tag"
      check_pushed "$remote:$remote_tag" "$DOCKER_MANIFEST_LIST"
    done
  fi
  echo "$target: $remote:$tag (${archs[*]})"
done
