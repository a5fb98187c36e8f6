"""serve.predictor and serve.settings: backends, model-folder checks, environment variables."""
from __future__ import annotations

import json
import logging
import shutil
import time

import numpy as np
import pytest

from artifact.manifest import ArtifactError, read_manifest, write_manifest
from serve import predictor as predictor_module
from serve.predictor import choose_backend, load_predictor
from serve.settings import Settings, SettingsError, visible_gpus


@pytest.fixture
def model_copy(trained_model, tmp_path):
    return shutil.copytree(trained_model, tmp_path / "model")


def test_onnx_and_torch_backends_agree_on_every_test_image(trained_model, small_data_master):
    onnx = load_predictor(trained_model, "onnx", precision="fp32")
    torch = load_predictor(trained_model, "torch")
    assert (onnx.backend.name, torch.backend.name) == ("onnx", "torch")
    images = [p.read_bytes() for p in sorted((small_data_master / "test").glob("*/*"))]
    assert len(images) >= 18
    batch = np.stack([onnx.decode(image) for image in images])
    p_onnx, p_torch = onnx.probabilities(batch), torch.probabilities(batch)
    np.testing.assert_array_equal(p_onnx.argmax(1), p_torch.argmax(1))
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-9)


def test_auto_prefers_onnx_and_falls_back_to_torch(model_copy):
    assert choose_backend(model_copy, "auto") == "onnx"
    (model_copy / "model.onnx").unlink()
    assert choose_backend(model_copy, "auto") == "torch"
    assert load_predictor(model_copy).backend.name == "torch"


def test_the_int8_copy_delivers_the_agreement_its_manifest_records(trained_model,
                                                                   small_data_master):
    """train/ measured the int8 copy against fp32 on the validation and test images; served,
    through the server's own decoding, the two agree on the same share of them."""
    int8 = load_predictor(trained_model, "onnx", precision="int8")
    fp32 = load_predictor(trained_model, "onnx", precision="fp32")
    assert (int8.model_info()["precision"], fp32.model_info()["precision"]) == ("int8", "fp32")
    recorded = read_manifest(trained_model).precisions["int8"]
    files = sorted((small_data_master / "valid").glob("*/*")) + sorted(
        (small_data_master / "test").glob("*/*"))
    assert len(files) == recorded["images"]
    batch = np.stack([fp32.decode(p.read_bytes()) for p in files])
    agreement = (int8.probabilities(batch).argmax(1) == fp32.probabilities(batch).argmax(1)).mean()
    assert agreement == pytest.approx(recorded["agreement"], abs=1.01 / len(files))


@pytest.mark.parametrize("passed, requested, chosen, why", [
    (True, "auto", "int8", "top-1 agreement with fp32 99.80% over 500"),
    (False, "auto", "fp32", "the int8 copy failed its gate"),
    (False, "int8", "int8", "BYOC_PRECISION=int8"),
    (True, "fp32", "fp32", "BYOC_PRECISION=fp32"),
])
def test_the_int8_copy_is_served_only_when_it_passed_its_gate(model_copy, caplog, passed,
                                                              requested, chosen, why):
    manifest = read_manifest(model_copy)
    manifest.precisions["int8"].update(passed=passed, agreement=0.998, images=500)
    write_manifest(model_copy, manifest)
    caplog.set_level(logging.INFO, logger="serve.predictor")
    predictor = load_predictor(model_copy, "onnx", precision=requested)
    assert predictor.model_info()["precision"] == chosen
    assert f"in {chosen} ({why}" in caplog.text


def test_int8_that_cannot_be_had_fails_at_start_saying_why(model_copy):
    with pytest.raises(ArtifactError, match="runs on ONNX Runtime"):
        load_predictor(model_copy, "torch", precision="int8")
    assert load_predictor(model_copy, "torch").model_info()["precision"] == "fp32"
    (model_copy / "model.int8.onnx").unlink()
    with pytest.raises(ArtifactError, match="no int8 copy: retrain with export_int8=true"):
        load_predictor(model_copy, "onnx", precision="int8")
    assert load_predictor(model_copy, "onnx").model_info()["precision"] == "fp32"


def test_a_missing_backend_names_the_image_to_use(model_copy, monkeypatch):
    real = predictor_module.installed
    monkeypatch.setattr(predictor_module, "installed", lambda m: m != "torch" and real(m))
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="no model.onnx.*byoc-serve-gpu"):
        choose_backend(model_copy, "auto")
    with pytest.raises(ArtifactError, match="no model.onnx.*retrain"):
        choose_backend(model_copy, "onnx")
    monkeypatch.setattr(predictor_module, "installed", lambda m: m != "onnxruntime" and real(m))
    with pytest.raises(ArtifactError, match="no ONNX Runtime.*byoc-serve"):
        choose_backend(model_copy, "onnx")


def test_a_manifest_that_does_not_match_the_weights_fails_the_warm_up(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["classes"].append("999.Extra")
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="warm-up prediction gave 6 class scores.*7 classes"):
        load_predictor(model_copy, "onnx")


def test_a_folder_without_a_manifest_says_what_it_expected(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json.*model.tar.gz"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("file, precision", [("model.onnx", "fp32"), ("model.int8.onnx", "int8")])
def test_a_corrupt_onnx_file_fails_to_load(model_copy, file, precision):
    (model_copy / file).write_bytes(b"not a protobuf")
    with pytest.raises(ArtifactError, match="cannot load the onnx model.*Re-upload it or retrain"):
        load_predictor(model_copy, "onnx", precision=precision)


def test_one_worker_whose_requests_share_the_model_and_every_core(monkeypatch):
    """A lone request's network runs on every core (BYOC_THREADS_PER_WORKER); concurrent
    requests compute one per core (BYOC_PARALLEL_REQUESTS), on many more request threads
    (BYOC_REQUEST_THREADS), in one copy of the model; batch transform is told two per core."""
    from serve.server import gunicorn_options

    monkeypatch.setattr("serve.settings.available_cpus", lambda: 8)
    for env in ({}, {"SAGEMAKER_MULTI_MODEL": "true"}):
        settings = Settings.from_environment(env)
        assert (settings.workers, settings.parallel_requests, settings.request_threads,
                settings.intra_op_threads) == (1, 8, 64, 8)
        options = gunicorn_options(settings)
        assert (options["worker_class"], options["threads"], options["workers"]) == (
            "gthread", 64, 1)
        assert settings.concurrency == 16
    monkeypatch.setattr("serve.settings.available_cpus", lambda: 2)
    assert Settings.from_environment({}).request_threads == 32  # at least 32
    monkeypatch.setattr("serve.settings.available_cpus", lambda: 8)
    settings = Settings.from_environment({"BYOC_REQUEST_THREADS": "2", "BYOC_PARALLEL_REQUESTS":
                                          "3", "BYOC_THREADS_PER_WORKER": "4"})
    assert (settings.request_threads, settings.parallel_requests, settings.intra_op_threads,
            settings.concurrency) == (2, 3, 4, 6)
    assert gunicorn_options(settings)["threads"] == 2
    two = Settings.from_environment({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})  # cores split
    assert (two.workers, two.parallel_requests, two.request_threads, two.intra_op_threads,
            two.concurrency) == (2, 4, 32, 8, 16)
    sync = Settings.from_environment({"BYOC_REQUEST_THREADS": "1"})
    assert gunicorn_options(sync)["worker_class"] == "sync"
    settings = Settings.from_environment({
        "SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
        "BYOC_MAX_PAYLOAD_MB": "0.5", "BYOC_BACKEND": "Torch", "BYOC_MODEL_DIR": "/m",
        "BYOC_SERVER_USER": ""})
    assert (settings.port, settings.timeout_s, settings.max_payload_bytes) == (9000, 30, 524288)
    assert (settings.backend, str(settings.model_dir), settings.user) == ("torch", "/m", "root")


@pytest.mark.parametrize("env, message", [
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "two"}, "SAGEMAKER_MODEL_SERVER_WORKERS='two' is not a whole number"),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "must be at least 1"),
    ({"BYOC_MAX_PAYLOAD_MB": "-1"}, "BYOC_MAX_PAYLOAD_MB='-1' must be at least"),
    ({"BYOC_BACKEND": "tensorrt"}, "choose one of auto, onnx, torch"),
    ({"BYOC_PRECISION": "fp16"}, "BYOC_PRECISION='fp16': choose one of auto, fp32, int8"),
])
def test_bad_settings_say_which_variable(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", "\\(")):
        Settings.from_environment(env)


@pytest.mark.parametrize("visible, expected", [
    ("0,1", ["0", "1"]), ("3", ["3"]), ("", []), ("-1", []), ("GPU-8f2c,GPU-11aa", ["GPU-8f2c", "GPU-11aa"]),
])
def test_visible_gpus_follow_cuda_visible_devices(visible, expected):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": visible}) == expected


def test_pytorch_on_gpus_gets_one_worker_per_gpu_and_each_worker_its_own(monkeypatch):
    """Without a GPU here, the defaults and the post-fork hook are what can be checked."""
    import os
    from types import SimpleNamespace

    from serve.server import gunicorn_options

    monkeypatch.setattr("serve.settings.available_cpus", lambda: 8)
    settings = Settings.from_environment({}, gpus=2)
    assert (settings.workers, settings.intra_op_threads, settings.parallel_requests,
            settings.request_threads) == (2, 8, 4, 32)
    explicit = Settings.from_environment({"SAGEMAKER_MODEL_SERVER_WORKERS": "4"}, gpus=2)
    assert explicit.workers == 4
    options = gunicorn_options(settings, ["0", "1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = []
    for age in (1, 2, 3):
        options["post_fork"](None, SimpleNamespace(age=age))
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    gunicorn_options(settings)["post_fork"](None, SimpleNamespace(age=1))  # no GPUs given
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"


def test_a_lone_request_runs_on_every_core_and_one_beside_others_on_its_own_thread(trained_model):
    """Which ONNX Runtime session a request's network runs on follows the machine's count of
    requests (serve/cores.py, tested there across processes): the all-cores one for a request
    alone, the single-threaded one for a request beside another, holding or waiting for a core."""
    from serve.cores import CORES

    predictor = load_predictor(trained_model, "onnx", 2, precision="fp32")
    backend = predictor.backend
    used = []
    for name in ("alone", "beside"):
        session = getattr(backend, name)
        setattr(backend, name, type("Spy", (), {"run": lambda self, *a, s=session, n=name: (
            used.append(n), s.run(*a))[1]})())
    image = _probe_png()
    alone = predictor.predict([image], 3)
    with CORES.turn():  # another request thread's request
        beside = predictor.predict([image], 3)
    assert used == ["alone", "beside"]
    assert [p["label"] for p in alone[0]] == [p["label"] for p in beside[0]]
    for a, b in zip(alone[0], beside[0]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def _probe_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()
