"""The serving image as a SageMaker multi-model endpoint: SAGEMAKER_MULTI_MODEL=true, model
folders under /opt/ml/models, loaded, invoked and unloaded through the /models API."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import requests

from artifact.manifest import read_manifest, write_manifest
from serve.models import estimated_memory
from tests.container.test_serve_container import Endpoint


@pytest.fixture
def models(demo_job, trained_model, tmp_path):
    """Two different models (the demo's, whose int8 copy passed its gate, and the unit tests'
    tiny one, whose copy failed it, as training records each: the manifests say so whatever
    the CPU that trained them made of the gate), a broken one and one too large for the
    budget, as SageMaker lays them out: /opt/ml/models/<name>/model."""
    root = tmp_path / "models"
    for name, source, gate in (("demo", demo_job[0] / "model", {"passed": True}),
                               ("tiny", trained_model, {"passed": False, "agreement": 0.9})):
        folder = shutil.copytree(source, root / name / "model")
        manifest = read_manifest(folder)
        manifest.precisions["int8"].update(gate)
        write_manifest(folder, manifest)
    broken = shutil.copytree(trained_model, root / "broken" / "model")
    for name in ("model.onnx", "model.int8.onnx"):  # whichever precision it would serve
        (broken / name).write_bytes(b"truncated")
    huge = shutil.copytree(trained_model, root / "huge" / "model")
    for name in ("model.onnx", "model.int8.onnx"):  # whichever precision it would serve
        with open(huge / name, "r+b") as f:  # sparse: large on paper only
            f.truncate(2 * 2**30)
    root.chmod(0o755)
    return root


@pytest.fixture
def endpoint(serve_image, models):
    # As the server estimates them: in the precision each serves, a lone request's network on
    # every core (the container sees this machine's CPUs). The budget holds demo and tiny, or
    # tiny twice, but not demo and tiny twice.
    cpus = len(os.sched_getaffinity(0))
    demo, tiny = (estimated_memory(models / n / "model", threads=cpus) for n in ("demo", "tiny"))
    budget_mb = (max(demo + tiny, 2 * tiny) + 0.5 * min(demo, tiny)) / 2**20
    env = {"SAGEMAKER_MULTI_MODEL": "true", "BYOC_MODEL_MEMORY_MB": f"{budget_mb:.1f}"}
    with Endpoint(serve_image, models, env, start_timeout_s=60,
                  mount_at="/opt/ml/models") as served:
        yield served.url, served.name


def load(url, name, folder=None):
    return requests.post(f"{url}/models", timeout=60, json={
        "model_name": name, "url": f"/opt/ml/models/{folder or name}/model"})


def invoke(url, name, image: bytes):
    return requests.post(f"{url}/models/{name}/invoke", data=image, timeout=60,
                         headers={"Content-Type": "image/png"})


def test_the_multi_model_api_in_the_container(endpoint, models, demo_data):
    url, container = endpoint
    image = min((demo_data / "test").glob("002.*/*.png")).read_bytes()
    assert requests.get(f"{url}/ping", timeout=2).json() == {"status": "healthy", "models": 0}
    assert invoke(url, "demo", image).status_code == 404  # not loaded yet

    assert load(url, "demo").status_code == 200 and load(url, "tiny").status_code == 200
    demo, tiny = invoke(url, "demo", image).json(), invoke(url, "tiny", image).json()
    assert demo["model"]["name"] == "demo-shapes" and tiny["model"]["name"] == "tiny-shapes"
    # Each model in the precision its own gate chose: the tiny model's int8 copy failed it.
    gates = {name: json.loads((models / name / "model" / "manifest.json").read_text())[
        "precisions"]["int8"]["passed"] for name in ("demo", "tiny")}
    assert gates == {"demo": True, "tiny": False}
    assert (demo["model"]["precision"], tiny["model"]["precision"]) == ("int8", "fp32")
    assert demo["predictions"][0]["label"] == "002.Green_square"
    assert load(url, "demo").status_code == 409

    broken = load(url, "broken")  # a failed load leaves the others serving
    assert broken.status_code == 500 and "could not be loaded" in broken.json()["error"]
    assert invoke(url, "demo", image).status_code == 200
    huge = load(url, "huge")
    assert huge.status_code == 507 and "BYOC_MODEL_MEMORY_MB" in huge.json()["error"]

    # The budget holds two: the third is SageMaker's to make room for, by unloading one.
    third = load(url, "tiny-again", "tiny")
    assert third.status_code == 507 and "unload a model first" in third.json()["error"]
    assert invoke(url, "demo", image).status_code == 200  # nothing was unloaded behind its back
    assert requests.delete(f"{url}/models/demo", timeout=5).status_code == 200
    assert load(url, "tiny-again", "tiny").status_code == 200
    listed = requests.get(f"{url}/models", timeout=5).json()["models"]
    assert [m["modelName"] for m in listed] == ["tiny", "tiny-again"]
    outside = requests.post(f"{url}/models", timeout=5,
                            json={"model_name": "x", "url": "/opt/ml/model"})
    assert outside.status_code == 400 and "outside /opt/ml/models" in outside.json()["error"]

    assert requests.delete(f"{url}/models/tiny", timeout=5).status_code == 200
    assert invoke(url, "tiny", image).status_code == 404
    assert invoke(url, "tiny-again", image).status_code == 200
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    assert "multi-model endpoint" in logs.stderr + logs.stdout
