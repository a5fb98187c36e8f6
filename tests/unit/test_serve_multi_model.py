"""Multi-model endpoints: SageMaker's /models API over serve/models.py's store, through Flask's
test client, on model folders written by a real training run. SageMaker's contract: a model that
does not fit is a 507, and SageMaker unloads models it picks; the container never does."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

from artifact.manifest import read_manifest
from serve.app import create_app
from serve.models import ModelStore, estimated_memory
from serve.predictor import load_predictor
from serve.settings import Settings


@pytest.fixture
def models(trained_model, tmp_path):
    """Two models as SageMaker lays them out: /opt/ml/models/<name>/model."""
    folders = {}
    for name in ("shapes-a", "shapes-b"):
        folders[name] = shutil.copytree(trained_model, tmp_path / name / "model")
    return folders


def app_with(budget_models: float, models, gate: threading.Event | None = None) -> tuple:
    """A multi-model app whose budget holds budget_models of these models, rooted where they are;
    with a gate, every load waits for it to open."""
    one = estimated_memory(next(iter(models.values())))
    root = next(iter(models.values())).parent.parent
    settings = Settings(multi_model=True, model_memory_bytes=int(one * budget_models),
                        models_root=root)
    loads = []

    def load(path):
        loads.append(path)
        if gate is not None:
            assert gate.wait(60)
        return load_predictor(path, "onnx")

    store = ModelStore(settings.model_memory_bytes, load, settings.models_root)
    return create_app(settings, store=store).test_client(), store, loads


def in_thread(call) -> tuple[threading.Thread, list]:
    """Run call() in a thread; its result lands in the list."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def load(client, name, url):
    return client.post("/models", json={"model_name": name, "url": str(url)})


def test_load_invoke_list_describe_and_unload(models, images_png):
    client, _, _ = app_with(3, models)
    assert client.get("/ping").get_json() == {"status": "healthy", "models": 0}
    for name, url in models.items():
        response = load(client, name, url)
        assert response.status_code == 200, response.get_json()
    listed = client.get("/models").get_json()["models"]
    assert listed == [{"modelName": n, "modelUrl": str(u)} for n, u in sorted(models.items())]
    described = client.get("/models/shapes-a").get_json()
    assert described["modelUrl"] == str(models["shapes-a"])
    assert described["model"]["name"] == read_manifest(models["shapes-a"]).name

    answer = client.post("/models/shapes-b/invoke", data=images_png, content_type="image/png")
    assert answer.status_code == 200 and len(answer.get_json()["predictions"]) == 3
    assert client.delete("/models/shapes-b").status_code == 200
    assert client.post("/models/shapes-b/invoke", data=images_png,
                       content_type="image/png").status_code == 404
    assert [m["modelName"] for m in client.get("/models").get_json()["models"]] == ["shapes-a"]


def test_errors_say_what_to_do(models):
    client, _, _ = app_with(3, models)
    assert load(client, "a", models["shapes-a"]).status_code == 200
    again = load(client, "a", models["shapes-a"])
    assert again.status_code == 409 and "DELETE /models/a" in again.get_json()["error"]
    root = models["shapes-a"].parent.parent
    missing = load(client, "x", root / "nowhere" / "model")
    assert missing.status_code == 404 and "no model folder" in missing.get_json()["error"]
    for outside in ("/etc", root / ".." / "elsewhere"):
        refused = load(client, "x", outside)
        assert refused.status_code == 400 and "outside" in refused.get_json()["error"]
    assert client.get("/models/x").status_code == 404
    assert client.delete("/models/x").status_code == 404
    bad = client.post("/models", data="{", content_type="application/json")
    assert bad.status_code == 400 and "model_name" in bad.get_json()["error"]
    single = client.post("/invocations", data=b"x", content_type="image/png")
    assert single.status_code == 400 and "/models/<name>/invoke" in single.get_json()["error"]


def test_a_model_that_does_not_fit_is_507_and_nothing_is_unloaded(models, tmp_path, images_png):
    """SageMaker then unloads a model it picks and loads again."""
    models = {**models, "shapes-c": shutil.copytree(models["shapes-a"], tmp_path / "c" / "model")}
    client, store, loads = app_with(2.5, models)  # room for two
    assert load(client, "shapes-a", models["shapes-a"]).status_code == 200
    assert load(client, "shapes-b", models["shapes-b"]).status_code == 200
    third = load(client, "shapes-c", models["shapes-c"])
    assert third.status_code == 507 and "unload a model first" in third.get_json()["error"]
    assert len(loads) == 2  # refused before loading
    for name in ("shapes-a", "shapes-b"):  # still there, still answering
        assert client.post(f"/models/{name}/invoke", data=images_png,
                           content_type="image/png").status_code == 200
    assert client.delete("/models/shapes-b").status_code == 200  # SageMaker's pick
    assert load(client, "shapes-c", models["shapes-c"]).status_code == 200
    assert store.used_bytes <= store.budget_bytes


def test_loads_in_flight_count_against_the_budget(models):
    gate = threading.Event()
    client, store, _ = app_with(1.5, models, gate)  # room for one
    first, answer = in_thread(lambda: load(client, "shapes-a", models["shapes-a"]))
    while "shapes-a" not in store._loading:
        time.sleep(0.01)
    second = load(client, "shapes-b", models["shapes-b"])  # fits alone, not beside the first
    assert second.status_code == 507, second.get_json()
    assert load(client, "shapes-a", models["shapes-a"]).status_code == 409  # loading counts
    gate.set()
    first.join()
    assert answer[0].status_code == 200 and len(store) == 1


def test_an_unload_during_the_load_unloads_it_when_loaded(models, images_png):
    gate = threading.Event()
    client, store, _ = app_with(3, models, gate)
    loading, loaded = in_thread(lambda: load(client, "shapes-a", models["shapes-a"]))
    while "shapes-a" not in store._loading:
        time.sleep(0.01)
    deleting, deleted = in_thread(lambda: client.delete("/models/shapes-a"))
    time.sleep(0.2)
    assert deleted == []  # it waits for the load
    gate.set()
    loading.join()
    deleting.join()
    assert loaded[0].status_code == 200 and deleted[0].status_code == 200
    assert len(store) == 0 and client.post("/models/shapes-a/invoke", data=images_png,
                                           content_type="image/png").status_code == 404


def test_a_model_larger_than_the_budget_is_507(models):
    client, _, loads = app_with(0.5, models)
    response = load(client, "shapes-a", models["shapes-a"])
    assert response.status_code == 507 and "BYOC_MODEL_MEMORY_MB" in response.get_json()["error"]
    assert loads == []  # refused before loading anything


def test_a_broken_model_fails_alone(models, tmp_path, images_png):
    broken = shutil.copytree(models["shapes-b"], tmp_path / "broken" / "model")
    for name in ("model.onnx", "model.int8.onnx"):  # whichever precision it would serve
        (broken / name).write_bytes(b"not a model")
    client, store, _ = app_with(2.5, models)  # the broken load fits only with shapes-a loaded
    assert load(client, "shapes-a", models["shapes-a"]).status_code == 200
    response = load(client, "broken", broken)
    assert response.status_code == 500 and "could not be loaded" in response.get_json()["error"]
    assert client.post("/models/shapes-a/invoke", data=images_png,
                       content_type="image/png").status_code == 200
    assert load(client, "broken", models["shapes-b"]).status_code == 200  # the name is free
    assert len(store) == 2 and store.used_bytes <= store.budget_bytes


def test_pages(models):
    client, _, _ = app_with(10, models)
    for name in ("m1", "m2", "m3"):
        assert load(client, name, models["shapes-a"]).status_code == 200
    first = client.get("/models?page_size=2").get_json()
    assert [m["modelName"] for m in first["models"]] == ["m1", "m2"]
    rest = client.get(f"/models?page_size=2&next_page_token={first['nextPageToken']}").get_json()
    assert [m["modelName"] for m in rest["models"]] == ["m3"] and "nextPageToken" not in rest


def test_concurrent_invocations_while_another_model_loads(models, images_png):
    client, _, _ = app_with(3, models)
    assert load(client, "shapes-a", models["shapes-a"]).status_code == 200
    statuses = []

    def invoke():
        for _ in range(5):
            statuses.append(client.post("/models/shapes-a/invoke", data=images_png,
                                        content_type="image/png").status_code)

    threads = [threading.Thread(target=invoke) for _ in range(3)]
    for t in threads:
        t.start()
    assert load(client, "shapes-b", models["shapes-b"]).status_code == 200
    for t in threads:
        t.join()
    assert statuses == [200] * 15


def test_multi_model_settings():
    settings = Settings.from_environment({"SAGEMAKER_MULTI_MODEL": "true",
                                          "SAGEMAKER_MODEL_SERVER_WORKERS": "4",
                                          "BYOC_MODEL_MEMORY_MB": "512"})
    assert settings.multi_model and settings.workers == 1  # one store for every request
    assert settings.model_memory_bytes == 512 * 2**20



@pytest.fixture(scope="module")
def resnet18_model(tmp_path_factory):
    """A ResNet-18 folder (random weights, 133 classes) with its int8 copy: a real model's size."""
    import numpy as np
    import torch

    from artifact.manifest import Manifest, Preprocessing, write_manifest
    from artifact.network import build_network
    from train.export import export_int8, write_artifact

    folder = tmp_path_factory.mktemp("resnet18") / "model"
    network, _ = build_network("resnet18", 133, [], 0.0)
    manifest = Manifest(architecture="resnet18", classes=[f"{i:03d}.c" for i in range(133)],
                        preprocessing=Preprocessing(), name="resnet18")
    write_artifact(network, manifest, folder, torch.randn(2, 3, 224, 224))
    batches = [np.random.default_rng(i).standard_normal((1, 3, 224, 224), np.float32)
               for i in range(4)]
    manifest.precisions["int8"] = export_int8(folder, batches, batches, np.zeros(4, np.int64))
    write_manifest(folder, manifest)
    return folder


MEASURE = """
import sys
from serve.predictor import load_predictor
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
folder, precision = sys.argv[1], sys.argv[2]
kept = [load_predictor(folder, "onnx", 2, precision=precision)]  # the one-time costs
before = resident()
kept.append(load_predictor(folder, "onnx", 2, precision=precision))
print(resident() - before)
"""


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_memory_estimate_covers_what_a_loaded_model_holds(resnet18_model, precision):
    """Measured in a fresh process: what one more copy of the model adds, with both of ONNX
    Runtime's sessions (a server with 2 threads per lone request), and the file it serves."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run([sys.executable, "-c", MEASURE, str(resnet18_model), precision],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    held = int(result.stdout.split()[-1])
    estimate = estimated_memory(resnet18_model, "onnx", precision, threads=2)
    assert held <= estimate <= 2 * held, (held / 2**20, estimate / 2**20)  # errs high, not wildly
    if precision == "int8":  # the int8 copy is what is served, and it is the smaller
        assert estimate < 0.5 * estimated_memory(resnet18_model, "onnx", "fp32", threads=2)


@pytest.fixture(scope="module")
def images_png(small_data_master) -> bytes:
    return next(iter(sorted((small_data_master / "test").glob("005.*/*.png")))).read_bytes()
