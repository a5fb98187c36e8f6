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
GPU_INSTANCE = re.compile(r"ml\.[gp]\d")  # ml.g4dn.xlarge, ml.g5..., ml.p4d..., ml.p6e-gb200...
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# What BatchGetImage may answer: a multi-architecture list (Docker's or OCI's), or one image.
MANIFEST_TYPES = [DOCKER_MANIFEST_LIST, OCI_INDEX, DOCKER_MANIFEST, OCI_MANIFEST]
# What SageMaker pulls: Docker's v2 schema 2 types. CreateModel and CreateTrainingJob refuse
# OCI's ("Unsupported manifest media type application/vnd.oci.image.manifest.v1+json"), which a
# BuildKit build with its default attestations pushes (build_and_push.sh checks its pushes for
# the same types).
SAGEMAKER_MANIFEST_TYPES = (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)


def instance_architecture(instance_type: str | None) -> str:
    """The architecture of an instance type; None (a serverless endpoint): amd64."""
    return "arm64" if instance_type and ARM64_INSTANCE.match(instance_type) else "amd64"


def offered(shape: str) -> list[str]:
    """The instance types botocore's SageMaker model lists in shape: ProductionVariantInstanceType
    (endpoints), TransformInstanceType (batch transform)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for(shape).enum)


def graviton_endpoint_instances() -> list[str]:
    """The arm64 CPU instance types SageMaker hosts endpoints on (the CPU serving image's arm64
    entry serves them), as botocore's model lists them."""
    return [t for t in offered("ProductionVariantInstanceType")
            if instance_architecture(t) == "arm64" and not GPU_INSTANCE.match(t)]


def require_transform_instance(instance_type: str) -> None:
    """SystemExit, before anything is uploaded or made, for an instance type batch transform
    does not offer: every arm64 type (botocore's TransformInstanceType lists none)."""
    if instance_type in offered("TransformInstanceType"):
        return
    if instance_architecture(instance_type) == "arm64":
        raise SystemExit(f"batch transform does not run on {instance_type}: its instances are "
                         "x86 only (botocore's TransformInstanceType lists no arm64 type); "
                         "choose ml.c5.xlarge, say (Graviton serves endpoints: "
                         "scripts/sagemaker_deploy.py)")
    raise SystemExit(f"batch transform does not offer {instance_type} (botocore's "
                     "TransformInstanceType): choose ml.c5.xlarge, ml.m5.xlarge, ...")


def build_command(image: str, local: bool = False) -> str:
    """What builds an image of the kit (IMAGE_PREFIX-train, -serve, -serve-gpu): for this
    machine (local), or, pushed, for every architecture SageMaker may run it on."""
    name = image.split("/")[-1].split(":")[0].split("@")[0]
    target = next((t for t in ("serve-gpu", "serve", "train") if name.endswith(t)), "serve")
    return f"docker/build.sh {target}" if local else f"./build_and_push.sh {target}"


def ecr_manifest(image_uri: str, ecr) -> tuple[dict, str, str]:
    """The manifest ECR holds for image_uri (BatchGetImage), its repository and its registry
    id, once it is known to be one SageMaker pulls: SystemExit in one line that names the image
    and what to do when the repository or the tag is missing, the credentials may not read it,
    or its media type is OCI's."""
    from botocore.exceptions import ClientError

    registry, _, reference = image_uri.partition("/")
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        wanted = {"imageDigest": digest}
    else:
        repository, _, tag = reference.partition(":")
        wanted = {"imageTag": tag or "latest"}
    registry_id = registry.split(".")[0]
    push = build_command(image_uri)
    try:
        answer = ecr.batch_get_image(registryId=registry_id, repositoryName=repository,
                                     imageIds=[wanted], acceptedMediaTypes=MANIFEST_TYPES)
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "RepositoryNotFoundException":
            raise SystemExit(f"image {image_uri}: ECR has no repository {repository} in account "
                             f"{registry_id} ({ecr.meta.region_name}): push the image with "
                             f"{push}") from None
        if error.get("Code") in ("AccessDeniedException", "AccessDenied"):
            raise SystemExit(f"image {image_uri}: ECR refused to read it ({error.get('Code')}: "
                             f"{error.get('Message', '')}): the credentials you launch with need "
                             f"ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on {repository}"
                             ) from None
        raise
    if not answer["images"]:
        reason = "; ".join(f.get("failureReason", f.get("failureCode", "")) for f in
                           answer.get("failures", [])) or "not found"
        raise SystemExit(f"image {image_uri} is not in ECR ({reason}): push it with {push}")
    image = answer["images"][0]
    manifest = json.loads(image["imageManifest"])
    media_type = image.get("imageManifestMediaType") or manifest.get("mediaType", OCI_MANIFEST)
    if media_type not in SAGEMAKER_MANIFEST_TYPES:
        raise SystemExit(f"image {image_uri} is in ECR as {media_type}, which SageMaker refuses "
                         "(\"Unsupported manifest media type\"; it takes Docker's): a BuildKit "
                         f"build with its default attestations pushes that; push it again with "
                         f"{push}, which pushes Docker's media types")
    return manifest, repository, registry_id


def listed_architectures(manifest: dict) -> list[str] | None:
    """The architectures of a manifest list or OCI index (None for a single image's manifest);
    attestations (platform unknown) are not images."""
    if "manifests" not in manifest:
        return None
    return sorted({ARCHITECTURES.get(m["platform"]["architecture"], m["platform"]["architecture"])
                   for m in manifest["manifests"] if m.get("platform", {}).get("os") == "linux"
                   and m["platform"].get("architecture") not in (None, "unknown")})


def ecr_architectures(image_uri: str, ecr) -> list[str]:
    """The architectures of an image in ECR (checked by ecr_manifest): from its manifest list,
    or, for a single image, from its configuration blob (GetDownloadUrlForLayer)."""
    from botocore.exceptions import ClientError

    manifest, repository, registry_id = ecr_manifest(image_uri, ecr)
    listed = listed_architectures(manifest)
    if listed is not None:
        return listed
    try:
        url = ecr.get_download_url_for_layer(
            registryId=registry_id, repositoryName=repository,
            layerDigest=manifest["config"]["digest"])["downloadUrl"]
        with urllib.request.urlopen(url, timeout=60) as response:  # a presigned S3 URL
            config = json.loads(response.read())
    except (ClientError, OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        why = (f"{e.response['Error'].get('Code')}: {e.response['Error'].get('Message', '')}"
               if isinstance(e, ClientError) else f"{type(e).__name__}: {e}")
        raise SystemExit(f"image {image_uri}: its configuration, which says its architecture, "
                         f"could not be read from ECR ({why}): the credentials you launch with "
                         f"need ecr:GetDownloadUrlForLayer on {repository}, and this machine "
                         "must reach ECR's S3 download URLs") from None
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
