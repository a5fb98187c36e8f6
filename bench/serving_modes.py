"""Serving beyond one real-time model: multi-model loads and batch transform requests, each
against its baseline in the same run, on the serving container.

    python -m bench.serving_modes [--image byoc-serve:latest] [--images 64]

Uses bench/serving.py's ResNet-50 model folder (133 classes). Measures:
  multi-model   POST /models + first invoke (a cold model) vs an invoke of a loaded one
  batch         images/s of application/jsonlines requests (16 records each, as batch transform
                sends MultiRecord) vs one real-time request per image, both with as many
                clients as the server has workers
  memory        the default container's memory after its first requests, in fp32 and in int8,
                for sizing serverless endpoints
Results also go to bench/results/serving_modes.json.
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench import RESULTS
from bench.model import make_model, photo
from bench.serving import container_memory_mib
from scripts.local_endpoint import docker_command, free_port, wait_until_healthy


def run_container(image: str, folder: Path, env: dict,
                  mount_at: str = "/opt/ml/model") -> tuple[str, str]:
    name, port = f"bench-serve-{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(docker_command(image, folder, port, name, env, mount_at=mount_at), check=True,
                   capture_output=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, name, timeout=120)
    return name, url


def multi_model(image: str, model_dir: Path, body: bytes, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        models.chmod(0o755)
        shutil.copytree(model_dir, models / "m" / "model")
        name, url = run_container(image, models, {"SAGEMAKER_MULTI_MODEL": "true"},
                                  mount_at="/opt/ml/models")
        headers = {"Content-Type": "image/jpeg"}
        cold, warm = [], []
        try:
            for i in range(rounds):
                started = time.perf_counter()
                loaded = requests.post(f"{url}/models", timeout=120, json={
                    "model_name": f"m{i}", "url": "/opt/ml/models/m/model"})
                assert loaded.status_code == 200, loaded.text
                first = requests.post(f"{url}/models/m{i}/invoke", data=body, headers=headers,
                                      timeout=60)
                cold.append(time.perf_counter() - started)
                assert first.status_code == 200, first.text
                for _ in range(5):
                    started = time.perf_counter()
                    requests.post(f"{url}/models/m{i}/invoke", data=body, headers=headers,
                                  timeout=60).raise_for_status()
                    warm.append(time.perf_counter() - started)
                requests.delete(f"{url}/models/m{i}", timeout=30).raise_for_status()
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    cold_ms, warm_ms = statistics.median(cold) * 1000, statistics.median(warm) * 1000
    return {"cold_load_and_invoke_ms": round(cold_ms, 1), "loaded_invoke_ms": round(warm_ms, 1),
            "cold_vs_loaded": round(cold_ms / warm_ms, 1)}


def batch_vs_realtime(image: str, model_dir: Path, body: bytes, count: int) -> dict:
    name, url = run_container(image, model_dir, {})
    try:
        workers = requests.get(f"{url}/execution-parameters", timeout=5).json()[
            "MaxConcurrentTransforms"]
        line = json.dumps({"image": base64.b64encode(body).decode()})

        def realtime(_):
            requests.post(f"{url}/invocations", data=body, timeout=60,
                          headers={"Content-Type": "image/jpeg"}).raise_for_status()

        def batch(_):
            answer = requests.post(f"{url}/invocations", data="\n".join([line] * 16), timeout=120,
                                   headers={"Content-Type": "application/jsonlines"})
            answer.raise_for_status()
            assert len(answer.text.splitlines()) == 16

        rates = {}
        for label, call, requests_needed, per_request in (
                ("realtime", realtime, count, 1), ("batch", batch, count // 16, 16)):
            call(0)  # warm
            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(call, range(requests_needed)))
            rates[label] = requests_needed * per_request / (time.perf_counter() - started)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return {"clients": workers, "realtime_images_per_s": round(rates["realtime"], 2),
            "batch_images_per_s": round(rates["batch"], 2),
            "batch_vs_realtime": round(rates["batch"] / rates["realtime"], 2)}


def serverless_memory(image: str, model_dir: Path, body: bytes) -> dict:
    """The default container's memory after a few requests, in fp32 and in int8."""
    memory = {}
    for precision in ("fp32", "int8"):
        name, url = run_container(image, model_dir, {"BYOC_PRECISION": precision})
        try:
            for _ in range(3):
                requests.post(f"{url}/invocations", data=body, timeout=60,
                              headers={"Content-Type": "image/jpeg"}).raise_for_status()
            memory[f"{precision}_container_mib"] = round(container_memory_mib(name), 1)
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="byoc-serve:latest")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model_dir = make_model(RESULTS / "resnet50-model")
    body = photo()
    results = {"image": args.image, "model": "resnet50, 133 classes", "photo_bytes": len(body)}
    results["multi_model"] = multi_model(args.image, model_dir, body, args.rounds)
    results["batch_transform"] = batch_vs_realtime(args.image, model_dir, body, args.images)
    results["serverless"] = serverless_memory(args.image, model_dir, body)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving_modes.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
