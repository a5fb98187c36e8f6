"""The serving container under load, against the same model's in-process inference as the ceiling.

    python -m bench.serving [--image byoc-serve:latest] [--seconds 8]

Writes a ResNet-50 model folder (133 classes, random weights: the compute is that of a trained
one) with train/'s own exporter, starts the serving image on it exactly as SageMaker does, and
measures in one run: cold start (`docker run` to the first /ping 200), latency p50/p99 at
concurrency 1 and 4, requests/s at 4 and 16, memory per worker, and in-process predictions at
batch 1 (decode + network, the same threads as one worker) as the ceiling; then ONNX Runtime
against PyTorch on the same model. Results also go to bench/results/serving.json.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import requests
import torch

from artifact.manifest import Manifest, Preprocessing
from artifact.network import build_network
from scripts.local_endpoint import docker_command, free_port, wait_until_healthy
from scripts.make_demo_data import make_image
from serve.predictor import load_predictor
from serve.settings import Settings
from train.export import write_artifact

RESULTS = Path(__file__).resolve().parent / "results"


def make_model(model_dir: Path) -> Path:
    if (model_dir / "manifest.json").is_file():
        return model_dir
    model, _ = build_network("resnet50", 133, [], 0.0)
    manifest = Manifest(architecture="resnet50", classes=[f"{i:03d}.breed" for i in range(133)],
                        preprocessing=Preprocessing(), name="bench-resnet50")
    write_artifact(model, manifest, model_dir, torch.randn(2, 3, 224, 224))
    return model_dir


def photo() -> bytes:
    """A 960x720 JPEG, about the size of the dog-breed photos."""
    image = make_image(np.random.default_rng(0), 3).resize((960, 720))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def load(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """Closed-loop load: `concurrency` clients, each sending its next request on an answer."""
    latencies: list[float] = []
    failures = []
    stop = time.perf_counter() + seconds

    def client():
        session = requests.Session()
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = session.post(f"{url}/invocations", data=body, timeout=60,
                                    headers={"Content-Type": "image/jpeg"})
            elapsed = time.perf_counter() - started
            (latencies if response.status_code == 200 else failures).append(elapsed)

    pings: list[float] = []

    def pinger():  # SageMaker keeps pinging under load: /ping waits behind busy workers
        while time.perf_counter() < stop:
            started = time.perf_counter()
            requests.get(f"{url}/ping", timeout=30)
            pings.append(time.perf_counter() - started)
            time.sleep(0.25)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    threads.append(threading.Thread(target=pinger))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"concurrency": concurrency, "requests": len(latencies), "failures": len(failures),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "requests_per_s": len(latencies) / wall, "ping_max_ms": 1000 * max(pings)}


def worker_memory_mib(container: str) -> list[float]:
    """Resident memory of each gunicorn worker (the processes whose parent is the master)."""
    rows = subprocess.run(["docker", "top", container, "-o", "pid,ppid,rss,args"],
                          capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    processes = [row.split()[:3] for row in rows if "serve.server" in row]
    pids = {pid for pid, _, _ in processes}
    return [int(rss) / 1024 for _, ppid, rss in processes if ppid in pids]


def in_process(model_dir: Path, backend: str, threads: int, body: bytes, seconds: float) -> dict:
    predictor = load_predictor(model_dir, backend, threads)
    times = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        predictor.predict([body], 3)
        times.append(time.perf_counter() - started)
    return {"backend": backend, "threads": threads, "p50_ms": 1000 * statistics.median(times),
            "per_s": len(times) / sum(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="byoc-serve:latest")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    model_dir = make_model(RESULTS / "resnet50-model")
    body = photo()
    defaults = Settings.from_environment({})  # what the container will use
    workers, threads = defaults.workers, defaults.intra_op_threads
    results: dict = {"workers": workers, "intra_op_threads": threads, "image_bytes": len(body)}

    name, port = f"byoc-bench-{uuid.uuid4().hex[:8]}", free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    subprocess.run(docker_command(args.image, model_dir, port, name), check=True,
                   stdout=subprocess.DEVNULL)
    try:
        wait_until_healthy(url, name)
        results["cold_start_s"] = time.perf_counter() - started
        load(url, body, workers, 2)  # warm every worker
        results["load"] = [load(url, body, c, args.seconds) for c in (1, 4, 16)]
        results["worker_rss_mib"] = worker_memory_mib(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)

    results["in_process"] = [in_process(model_dir, backend, n, body, args.seconds / 2)
                             for backend in ("onnx", "torch")
                             for n in sorted({threads, workers * threads})]
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2))

    ceiling = next(r for r in results["in_process"]
                   if r["backend"] == "onnx" and r["threads"] == threads)
    by_c = {r["concurrency"]: r for r in results["load"]}
    print(f"ResNet-50, 133 classes, {len(body) // 1024} kB JPEG, "
          f"{workers} worker(s) x {threads} thread(s)")
    print(f"cold start (docker run -> /ping 200): {results['cold_start_s']:.2f} s")
    print("concurrency  requests  failures   p50 ms   p99 ms  p99/p50    req/s  max /ping ms")
    for r in results["load"]:
        print(f"{r['concurrency']:>11}  {r['requests']:>8}  {r['failures']:>8}  {r['p50_ms']:7.1f}"
              f"  {r['p99_ms']:7.1f}  {r['p99_ms'] / r['p50_ms']:7.2f}  {r['requests_per_s']:7.2f}"
              f"  {r['ping_max_ms']:12.1f}")
    print("memory per worker (RSS MiB): " + ", ".join(f"{m:.0f}" for m in results["worker_rss_mib"]))
    print("in process, batch 1 (decode + network):")
    for r in results["in_process"]:
        print(f"    {r['backend']:5} {r['threads']} thread(s): p50 {r['p50_ms']:6.1f} ms, "
              f"{r['per_s']:6.2f} predictions/s")
    print(f"serving / in-process at concurrency 1 (same threads): "
          f"{ceiling['p50_ms'] / by_c[1]['p50_ms']:.3f} (latency), "
          f"{by_c[1]['requests_per_s'] / ceiling['per_s']:.3f} (rate)")
    best = max(results["load"], key=lambda r: r["requests_per_s"])
    print(f"serving's best rate / ({workers} x in-process): "
          f"{best['requests_per_s'] / (workers * ceiling['per_s']):.3f}")
    onnx = {r["threads"]: r for r in results["in_process"] if r["backend"] == "onnx"}
    torch_ = {r["threads"]: r for r in results["in_process"] if r["backend"] == "torch"}
    for threads in onnx:
        print(f"ONNX Runtime / PyTorch, {threads} thread(s): "
              f"{onnx[threads]['per_s'] / torch_[threads]['per_s']:.2f}x")


if __name__ == "__main__":
    main()
