"""A user still on SDK v2 drives the same images: sdk_v2/drive.py, in an environment of SDK v2
alone (built here once, then kept while requirements/sdk-v2.txt stays the same), trains on two
instances in v2's local mode, deploys, predicts and deletes. The images stay SDK-neutral."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from scripts.local_endpoint import free_port
from tests.conftest import ROOT
from tests.container.test_sagemaker_local import local_mode, our_containers  # noqa: F401

REQUIREMENTS = ROOT / "requirements" / "sdk-v2.txt"
ENVIRONMENT = ROOT / ".venv-sdk2"


@pytest.fixture(scope="session")
def sdk_v2_python() -> str:
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = ENVIRONMENT / ".requirements.sha"
    python = ENVIRONMENT / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_text() != want:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ENVIRONMENT)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
                       check=True, timeout=900)
        stamp.write_text(want)
    version = subprocess.run([str(python), "-c", "import sagemaker; print(sagemaker.__version__)"],
                             capture_output=True, text=True, check=True).stdout.split()[-1]
    assert version.startswith("2."), version
    return str(python)


def test_sdk_v2_trains_on_two_instances_deploys_predicts_and_deletes(
        local_mode, sdk_v2_python, demo_data, tmp_path):  # noqa: F811
    output = tmp_path / "output"
    output.mkdir()
    png = sorted(demo_data.glob("test/*/*.png"))[0]
    port = os.environ["PORT"]
    result = subprocess.run(
        [sdk_v2_python, str(ROOT / "tests" / "container" / "sdk_v2" / "drive.py"),
         "byoc-test-train:latest", "byoc-test-serve:latest", str(demo_data), str(output),
         str(png), port],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""})  # nothing of the kit's, nothing of v3
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_data"] == f"file://{output}/model.tar.gz"
    answer = report["answer"]
    assert len(answer["predictions"]) == 2
    assert answer["model"]["architecture"] == "resnet18" and answer["model"]["backend"] == "onnx"
    assert (output / "model.tar.gz").exists()
    for leftover in our_containers():  # v2 leaves its stopped containers behind
        subprocess.run(["docker", "rm", "-f", leftover], capture_output=True, check=False)
