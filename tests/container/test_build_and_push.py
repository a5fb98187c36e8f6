"""build_and_push.sh: a real push of both images to a local registry and a pull back; the ECR
path's AWS calls against moto's server, with --dry-run for what only AWS can do."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import requests

from scripts.local_endpoint import free_port, wait_for_http
from tests.conftest import ROOT, moto_environment, required

SCRIPT = str(ROOT / "build_and_push.sh")


def image_id(reference: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", reference],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on 127.0.0.1 (Docker trusts plain HTTP on loopback)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        required("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    wait_for_http(f"http://{address}/v2/", 30,
                  stopped=lambda: None if process.poll() is None else "docker-registry exited")
    yield address
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(tmp_path / "data", ignore_errors=True)  # gigabytes of layers


MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def manifest(registry: str, repository: str, tag: str) -> dict:
    """What the registry holds under a tag (a manifest list or an OCI index when it is one)."""
    return requests.get(f"http://{registry}/v2/{repository}/manifests/{tag}", timeout=5,
                        headers={"Accept": f"{MANIFEST_LIST}, {MANIFEST}, {OCI_INDEX}, "
                                           "application/vnd.oci.image.manifest.v1+json"}).json()


def one_file_image(env: dict, reference: str, platform: str, context, kits_options: bool) -> None:
    """A one-file image FROM scratch, built by the BuildKit daemon of env: with BuildKit's
    defaults, as Docker Desktop builds, or with the options docker/build.sh gives it."""
    if not (context / "Dockerfile").exists():
        (context / "hello.txt").write_text("hello\n")
        (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    options = "$(buildkit_options)" if kits_options else ""
    built = subprocess.run(
        ["bash", "-c", f"source docker/buildkit.sh && docker build -q {options} "
                       f"--platform {platform} -t {reference} {context}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]


def push_built(env: dict, registry: str, tag: str, *images: str) -> subprocess.CompletedProcess:
    """build_and_push.sh --no-build: what the BuildKit daemon holds under tag, to registry."""
    return subprocess.run([SCRIPT, "--no-build", "--registry", f"{registry}/team", "--tag", tag,
                           *images], env={**env, "IMAGE_PREFIX": "byoc-test"},
                          capture_output=True, text=True, timeout=600)


def test_from_an_arm64_default_it_pushes_what_sagemaker_runs_and_each_pulls_back(
        serve_image, serve_image_arm64, registry, tmp_path):
    """As from a Mac, whose Docker builds linux/arm64 by default: the CPU serving image is built
    and pushed as one tag over amd64 and arm64, and each architecture, pulled back by that tag,
    is the image built here (the same image id: test_serve_arm64 and test_serve_container run
    each). A single-architecture image (the training image's path)
    goes by --no-build, as a one-file stand-in: the real one is 6.8 GB of CUDA libraries to
    compress and pull back, and its amd64 build from an arm64 default is the dry run's."""
    env = {**os.environ, "IMAGE_PREFIX": "byoc-test", "DOCKER_DEFAULT_PLATFORM": "linux/arm64"}
    one_file_image({**os.environ}, "byoc-test-train:v-test", "linux/amd64", tmp_path,
                   kits_options=True)
    for argv in (["serve"], ["--no-build", "train"]):
        result = subprocess.run([SCRIPT, "--registry", f"{registry}/team", "--tag", "v-test",
                                 *argv], env=env, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    catalog = requests.get(f"http://{registry}/v2/_catalog", timeout=5).json()["repositories"]
    assert sorted(catalog) == ["team/byoc-test-serve", "team/byoc-test-train"]
    for tag in ("v-test", "latest"):
        train = manifest(registry, "team/byoc-test-train", tag)
        assert train["mediaType"] == MANIFEST
        config = requests.get(f"http://{registry}/v2/team/byoc-test-train/blobs/"
                              f"{train['config']['digest']}", timeout=30).json()
        assert config["architecture"] == "amd64"
        listed = manifest(registry, "team/byoc-test-serve", tag)
        assert listed["mediaType"] == MANIFEST_LIST
        assert sorted(m["platform"]["architecture"] for m in listed["manifests"]) == [
            "amd64", "arm64"]

    trained = f"{registry}/team/byoc-test-train:v-test"
    subprocess.run(["docker", "rmi", trained, f"{registry}/team/byoc-test-train:latest"],
                   check=True, capture_output=True)
    subprocess.run(["docker", "pull", "-q", trained], check=True, capture_output=True)
    assert image_id(trained) == image_id("byoc-test-train:v-test")
    subprocess.run(["docker", "rmi", trained, "byoc-test-train:v-test"], capture_output=True)

    remote = f"{registry}/team/byoc-test-serve:v-test"
    for architecture in ("amd64", "arm64"):
        subprocess.run(["docker", "rmi", remote], capture_output=True)
        subprocess.run(["docker", "pull", "-q", "--platform", f"linux/{architecture}", remote],
                       check=True, capture_output=True)
        assert image_id(remote) == image_id(f"byoc-test-serve:v-test-{architecture}")
    subprocess.run(["docker", "rmi", remote], capture_output=True)


def aws_env(endpoint: str) -> dict:
    venv_bin = os.path.dirname(sys.executable)  # the .venv's aws CLI comes first
    return {**os.environ, **moto_environment(endpoint), "PATH": f"{venv_bin}:{os.environ['PATH']}"}


def test_ecr_dry_run_finds_the_account_and_plans_every_step(docker, moto_url):
    """From an arm64 default (a Mac's Docker) too, each image is built for where SageMaker runs
    it: the training image for amd64, the CPU serving image for both."""
    result = subprocess.run([SCRIPT, "--dry-run", "--tag", "1.2.3", "train", "serve"],
                            env={**aws_env(moto_url), "DOCKER_DEFAULT_PLATFORM": "linux/arm64"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"  # moto's account
    lines = result.stdout.splitlines()
    assert f"pushing to ECR: {registry}" in lines
    assert any(line.startswith("+ aws ecr create-repository --region eu-west-1 "
                               "--repository-name byoc-serve") for line in lines)
    assert (f"+ aws ecr get-login-password --region eu-west-1 | docker login --username AWS "
            f"--password-stdin {registry}") in lines
    assert ("+ env IMAGE_PREFIX=byoc TAG=1.2.3 PLATFORM=linux/amd64 docker/build.sh train"
            in lines)
    for tag in ("1.2.3", "latest"):
        assert f"+ docker push --quiet {registry}/byoc-train:{tag}" in lines
    for architecture in ("amd64", "arm64"):  # each built for its platform, whatever the host's
        assert (f"+ env IMAGE_PREFIX=byoc TAG=1.2.3-{architecture} PLATFORM=linux/{architecture} "
                "docker/build.sh serve") in lines
        assert (f"+ docker tag byoc-serve:1.2.3-{architecture} "
                f"{registry}/byoc-serve:1.2.3-{architecture}") in lines
        assert f"+ docker push --quiet {registry}/byoc-serve:1.2.3-{architecture}" in lines
    for tag in ("1.2.3", "latest"):  # one tag over both: ECR speaks HTTPS, no --insecure
        assert (f"+ docker manifest create --amend {registry}/byoc-serve:{tag} "
                f"{registry}/byoc-serve:1.2.3-amd64 {registry}/byoc-serve:1.2.3-arm64") in lines
        assert f"+ docker manifest push --purge {registry}/byoc-serve:{tag}" in lines


def test_an_existing_ecr_repository_is_not_created_again(docker, moto_url):
    import boto3

    ecr = boto3.client("ecr", endpoint_url=moto_url, region_name="eu-west-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ecr.create_repository(repositoryName="byoc-train")
    result = subprocess.run([SCRIPT, "--dry-run", "train", "serve"], env=aws_env(moto_url),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--repository-name byoc-train" not in result.stdout
    assert "--repository-name byoc-serve" in result.stdout


def test_missing_credentials_and_region_are_explained(docker, moto_url):
    env = aws_env(moto_url)
    del env["AWS_REGION"]
    env.pop("AWS_DEFAULT_REGION", None)
    result = subprocess.run([SCRIPT, "--dry-run"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "no AWS region: pass --region" in result.stderr
    env = {**aws_env("http://127.0.0.1:9"), "AWS_ACCESS_KEY_ID": ""}
    result = subprocess.run([SCRIPT, "--dry-run"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "no usable AWS credentials" in result.stderr
