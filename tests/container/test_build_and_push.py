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
from tests.conftest import ROOT, moto_environment

SCRIPT = str(ROOT / "build_and_push.sh")


def image_id(reference: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", reference],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on 127.0.0.1 (Docker trusts plain HTTP on loopback)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is not installed (apt-get install docker-registry)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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


def manifest(registry: str, repository: str, tag: str) -> dict:
    """What the registry holds under a tag (a manifest list when it is one)."""
    return requests.get(f"http://{registry}/v2/{repository}/manifests/{tag}", timeout=5,
                        headers={"Accept": f"{MANIFEST_LIST}, {MANIFEST}"}).json()


def test_from_an_arm64_default_it_pushes_what_sagemaker_runs_and_each_pulls_back(
        train_image, serve_image, serve_image_arm64, registry, demo_job, demo_data):
    """As from a Mac, whose Docker builds linux/arm64 by default: the training image is pushed
    for amd64, and the CPU serving image as one tag over amd64 and arm64. Each architecture is
    pulled back by that tag and answers as the image built here."""
    from tests.container.test_serve_arm64 import answers, sample

    env = {**os.environ, "IMAGE_PREFIX": "byoc-test", "DOCKER_DEFAULT_PLATFORM": "linux/arm64"}
    result = subprocess.run([SCRIPT, "--registry", f"{registry}/team", "--tag", "v-test",
                             "train", "serve"], env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    catalog = requests.get(f"http://{registry}/v2/_catalog", timeout=5).json()["repositories"]
    assert sorted(catalog) == ["team/byoc-test-serve", "team/byoc-test-train"]
    train = manifest(registry, "team/byoc-test-train", "v-test")
    assert train["mediaType"] == MANIFEST
    config = requests.get(f"http://{registry}/v2/team/byoc-test-train/blobs/"
                          f"{train['config']['digest']}", timeout=30).json()
    assert config["architecture"] == "amd64"
    for tag in ("v-test", "latest"):
        listed = manifest(registry, "team/byoc-test-serve", tag)
        assert listed["mediaType"] == MANIFEST_LIST
        assert sorted(m["platform"]["architecture"] for m in listed["manifests"]) == [
            "amd64", "arm64"]

    trained = f"{registry}/team/byoc-test-train:v-test"
    subprocess.run(["docker", "rmi", trained, f"{registry}/team/byoc-test-train:latest"],
                   check=True, capture_output=True)
    subprocess.run(["docker", "pull", "-q", trained], check=True, capture_output=True)
    assert image_id(trained) == image_id("byoc-test-train:v-test")
    subprocess.run(["docker", "rmi", trained], capture_output=True)

    remote = f"{registry}/team/byoc-test-serve:v-test"
    images, pulled = sample(demo_data)[::2], {}
    for architecture in ("amd64", "arm64"):
        subprocess.run(["docker", "rmi", remote], capture_output=True)
        subprocess.run(["docker", "pull", "-q", "--platform", f"linux/{architecture}", remote],
                       check=True, capture_output=True)
        assert image_id(remote) == image_id(f"byoc-test-serve:v-test-{architecture}")
        pulled[architecture] = answers(remote, demo_job[0] / "model", images)
    subprocess.run(["docker", "rmi", remote], capture_output=True)
    assert (pulled["amd64"]["machine"], pulled["arm64"]["machine"]) == ("x86_64", "aarch64")
    expected = answers(serve_image, demo_job[0] / "model", images)
    for architecture, said in pulled.items():
        assert said["precision"] == expected["precision"] == "int8"
        assert said["alone"] == said["batch"] == expected["alone"], architecture


def aws_env(endpoint: str) -> dict:
    venv_bin = os.path.dirname(sys.executable)  # the .venv's aws CLI comes first
    return {**os.environ, **moto_environment(endpoint), "PATH": f"{venv_bin}:{os.environ['PATH']}"}


def test_ecr_dry_run_finds_the_account_and_plans_every_step(docker, moto_url):
    result = subprocess.run([SCRIPT, "--dry-run", "--tag", "1.2.3", "serve"],
                            env=aws_env(moto_url), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"  # moto's account
    lines = result.stdout.splitlines()
    assert f"pushing to ECR: {registry}" in lines
    assert any(line.startswith("+ aws ecr create-repository --region eu-west-1 "
                               "--repository-name byoc-serve") for line in lines)
    assert (f"+ aws ecr get-login-password --region eu-west-1 | docker login --username AWS "
            f"--password-stdin {registry}") in lines
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
