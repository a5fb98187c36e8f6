"""Which architecture an instance runs and which architectures an image has, checked before any
model is made: an image that lacks the instance's architecture fails here, in a line that says
how to build it, not minutes into an endpoint that never passes its ping (SageMaker starts the
container, which dies on `exec format error`, and rolls the endpoint back, billed).

Architectures are named as Docker and OCI name them: amd64 (x86_64) and arm64 (aarch64).
"""
from __future__ import annotations

import json
import re
import subprocess
import urllib.request

# AWS Graviton (ml.c6g, ml.c6gd, ml.c6gn, ml.c7g, ml.c8g, ml.m6g, ml.m6gd, ml.m8g, ml.r6g,
# ml.r6gd, ml.r7gd, ml.r8g: botocore's ProductionVariantInstanceType) and NVIDIA Grace
# (ml.p6e-gb200) are arm64; every other SageMaker instance is amd64. Serverless endpoints and
# batch transform run on x86 (AWS offers Graviton for instance endpoints only).
ARM64_INSTANCE = re.compile(r"ml\.(?:[a-z]+\d+g[a-z]*|p\d+e-gb\d+)\.")
ARCHITECTURES = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
# What BatchGetImage may answer: a multi-architecture list (Docker's or OCI's), or one image.
MANIFEST_TYPES = ["application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json"]


def instance_architecture(instance_type: str | None) -> str:
    """The architecture of an instance type; None (a serverless endpoint): amd64."""
    return "arm64" if instance_type and ARM64_INSTANCE.match(instance_type) else "amd64"


def build_command(image: str, local: bool = False) -> str:
    """What builds the serving image: for this machine (local), or, pushed, for every
    architecture SageMaker may run it on."""
    target = "serve-gpu" if image.split("/")[-1].split(":")[0].endswith("serve-gpu") else "serve"
    return f"docker/build.sh {target}" if local else f"./build_and_push.sh {target}"


def listed_architectures(manifest: dict) -> list[str] | None:
    """The architectures of a manifest list or OCI index (None for a single image's manifest);
    attestations (platform unknown) are not images."""
    if "manifests" not in manifest:
        return None
    return sorted({ARCHITECTURES.get(m["platform"]["architecture"], m["platform"]["architecture"])
                   for m in manifest["manifests"] if m.get("platform", {}).get("os") == "linux"
                   and m["platform"].get("architecture") not in (None, "unknown")})


def ecr_architectures(image_uri: str, ecr) -> list[str]:
    """The architectures of an image in ECR: from its manifest list (BatchGetImage), or, for a
    single image, from its configuration blob (GetDownloadUrlForLayer)."""
    registry, _, reference = image_uri.partition("/")
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        wanted = {"imageDigest": digest}
    else:
        repository, _, tag = reference.partition(":")
        wanted = {"imageTag": tag or "latest"}
    registry_id = registry.split(".")[0]
    answer = ecr.batch_get_image(registryId=registry_id, repositoryName=repository,
                                 imageIds=[wanted], acceptedMediaTypes=MANIFEST_TYPES)
    if not answer["images"]:
        reason = "; ".join(f.get("failureReason", f.get("failureCode", "")) for f in
                           answer.get("failures", [])) or "not found"
        raise SystemExit(f"image {image_uri} is not in ECR ({reason}): push it with "
                         f"{build_command(image_uri)}")
    manifest = json.loads(answer["images"][0]["imageManifest"])
    listed = listed_architectures(manifest)
    if listed is not None:
        return listed
    url = ecr.get_download_url_for_layer(registryId=registry_id, repositoryName=repository,
                                         layerDigest=manifest["config"]["digest"])["downloadUrl"]
    with urllib.request.urlopen(url, timeout=60) as response:  # a presigned S3 URL
        config = json.loads(response.read())
    return [ARCHITECTURES.get(config["architecture"], config["architecture"])]


def local_architectures(image: str) -> list[str]:
    """The architecture of a local image (Docker keeps one per tag)."""
    inspected = subprocess.run(["docker", "image", "inspect", "-f", "{{.Architecture}}", image],
                               capture_output=True, text=True)
    if inspected.returncode != 0:
        raise SystemExit(f"no local image {image}: build it with "
                         f"{build_command(image, local=True)}")
    found = inspected.stdout.strip()
    return [ARCHITECTURES.get(found, found)]


def docker_architecture() -> str:
    """The architecture the local Docker daemon runs (local mode's instance)."""
    found = subprocess.run(["docker", "version", "-f", "{{.Server.Arch}}"], capture_output=True,
                           text=True, check=True).stdout.strip()
    return ARCHITECTURES.get(found, found)


def require(image: str, architectures: list[str], needed: str, where: str,
            local: bool = False) -> None:
    """SystemExit naming the image, its architectures, where it was to run and how to build
    the missing one, unless the image has the needed architecture."""
    if needed in architectures:
        return
    how = (f"build it for this machine with {build_command(image, local=True)}" if local else
           f"build and push it for {needed} with {build_command(image)} (it pushes the CPU "
           "serving image for amd64 and arm64)")
    has = " and ".join(architectures) or "of no known architecture"
    raise SystemExit(f"image {image} is {has}, but {where} runs {needed}: {how}")
