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
#   --no-build       push images built earlier (docker/build.sh) under the same version tag
#   --dry-run        print every command that would change something, run none of them
# Images: train, serve (CPU), serve-gpu (default: all three). Repositories are named
# ${IMAGE_PREFIX:-byoc}-<image>. BASE_IMAGE, EXTRA_CA_BUNDLE and TORCH_INDEX_URL reach the builds.
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

if [ "$build" = 1 ]; then
  run env IMAGE_PREFIX="$prefix" TAG="$tag" docker/build.sh "${targets[@]}"
fi
for target in "${targets[@]}"; do
  local_image="$prefix-$target:$tag"
  remote="$registry/$prefix-$target"
  if [ "$dry_run" = 0 ]; then
    docker image inspect "$local_image" >/dev/null 2>&1 || die "no local image $local_image: build it (drop --no-build)"
  fi
  for remote_tag in "$tag" latest; do
    run docker tag "$local_image" "$remote:$remote_tag"
    run docker push --quiet "$remote:$remote_tag"
  done
  echo "$target: $remote:$tag"
done
