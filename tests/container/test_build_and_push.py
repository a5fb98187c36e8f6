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


def test_pushes_both_images_to_a_registry_and_they_pull_back(train_image, serve_image, registry):
    env = {**os.environ, "IMAGE_PREFIX": "byoc-test"}
    result = subprocess.run([SCRIPT, "--registry", f"{registry}/team", "--tag", "v-test",
                             "train", "serve"], env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    catalog = requests.get(f"http://{registry}/v2/_catalog", timeout=5).json()["repositories"]
    assert sorted(catalog) == ["team/byoc-test-serve", "team/byoc-test-train"]
    for target in ("train", "serve"):
        repository = f"{registry}/team/byoc-test-{target}"
        tags = requests.get(f"http://{registry}/v2/team/byoc-test-{target}/tags/list",
                            timeout=5).json()["tags"]
        assert sorted(tags) == ["latest", "v-test"]
        built = image_id(f"byoc-test-{target}:v-test")
        subprocess.run(["docker", "rmi", f"{repository}:v-test", f"{repository}:latest"],
                       check=True, capture_output=True)
        subprocess.run(["docker", "pull", "-q", f"{repository}:v-test"], check=True,
                       capture_output=True)
        assert image_id(f"{repository}:v-test") == built
        subprocess.run(["docker", "rmi", f"{repository}:v-test"], capture_output=True)


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
    for tag in ("1.2.3", "latest"):
        assert f"+ docker tag byoc-serve:1.2.3 {registry}/byoc-serve:{tag}" in lines
        assert f"+ docker push --quiet {registry}/byoc-serve:{tag}" in lines


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
