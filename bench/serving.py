"""The serving container under load, against the same model's in-process inference as the ceiling.

    python -m bench.serving [--image byoc-serve:latest] [--seconds 8]

Writes a ResNet-50 model folder (133 classes, random weights: the compute is that of a trained
one) with train/'s own exporter, and its int8 copy (train/quantize.py, calibrated on generated
images; a random model's gate means nothing, so the int8 run forces BYOC_PRECISION=int8).
For fp32 and int8 in turn, starts the serving image on it exactly as SageMaker does and
measures: cold start (`docker run` to the first /ping 200, which follows the first inference,
the warm-up), memory (all the container's processes, idle and after the load), latency p50/p99
and requests/s at concurrency 1, 2, 4 and 16 (each the median of --rounds interleaved rounds),
/ping under load; and in process, decode and
network at batch 1: one request on every core (the latency floor), and one single-threaded
model per core in parallel (the throughput ceiling). Also ONNX Runtime against PyTorch in fp32.
Results also go to bench/results/serving.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from bench import RESULTS
from bench.model import make_model, photo
from scripts.local_endpoint import docker_command, free_port, wait_until_healthy
from serve.predictor import load_predictor
from serve.settings import Settings


def in_threads(client, count: int) -> float:
    """Run client in count threads at once; the wall-clock seconds until all are done."""
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*all"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "failures": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"seconds": %f}\\n', summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration / 1e6))
end
"""


def load(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """Closed-loop load: `concurrency` clients, each sending its next request on an answer; by
    wrk when it is installed (apt-get install wrk: a C client that leaves the cores to the
    server), else by Python clients; and /ping probed every 0.25 s meanwhile, as SageMaker
    keeps pinging under load (it waits behind busy request threads)."""
    pings: list[float] = []
    stop = time.perf_counter() + seconds

    def pinger():
        while time.perf_counter() < stop:
            started = time.perf_counter()
            requests.get(f"{url}/ping", timeout=30)
            pings.append(time.perf_counter() - started)
            time.sleep(0.25)

    probe = threading.Thread(target=pinger)
    probe.start()
    result = by_wrk(url, body, concurrency, seconds) if shutil.which("wrk") else by_python(
        url, body, concurrency, seconds)
    probe.join()
    # wrk stops with requests still queued in the server, which the server still answers: one
    # more request waits until they are done, so that the next measurement starts on an idle one
    requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "image/jpeg"},
                  timeout=60)
    return {"concurrency": concurrency, **result, "ping_max_ms": 1000 * max(pings)}


def by_wrk(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        (Path(tmp) / "body").write_bytes(body)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:.0f}s", "-s", f"{tmp}/post.lua",
             f"{url}/invocations"], capture_output=True, text=True, check=True,
            env={**os.environ, "BENCH_BODY": f"{tmp}/body"}).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    return {"client": "wrk", "requests": stats["requests"], "failures": stats["failures"],
            "p50_ms": stats["p50_us"] / 1000, "p99_ms": stats["p99_us"] / 1000,
            "requests_per_s": stats["requests"] / stats["seconds"]}


def by_python(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
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

    wall = in_threads(client, concurrency)
    latencies.sort()
    return {"client": "python", "requests": len(latencies), "failures": len(failures),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "requests_per_s": len(latencies) / wall}


def container_memory_mib(name: str) -> float:
    """The container's memory use as its cgroup counts it (what SageMaker sizes against)."""
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name],
                         capture_output=True, text=True, check=True).stdout.split("/")[0].strip()
    value, unit = float(out[:-3]), out[-3:]
    return value * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def in_process(model_dir: Path, precision: str, body: bytes, seconds: float) -> dict:
    """One request on every core (latency), and a single-threaded model per core side by side
    (throughput): what one machine does without HTTP."""
    cores = len(os.sched_getaffinity(0))
    alone = load_predictor(model_dir, "onnx", cores, precision=precision)
    times, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        alone.predict([body], 3)
        times.append(time.perf_counter() - started)
    per_core = [load_predictor(model_dir, "onnx", 1, precision=precision) for _ in range(cores)]
    counts = [0] * cores
    stop = time.perf_counter() + seconds

    def run(i: int):
        while time.perf_counter() < stop:
            per_core[i].predict([body], 3)
            counts[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(cores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    return {"precision": precision, "cores": cores, "p50_ms": 1000 * statistics.median(times),
            # the machine's own jitter, without HTTP or other requests: what p99/p50 can reach
            "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
            "ceiling_per_s": sum(counts) / (time.perf_counter() - started)}


CONCURRENCIES = (1, 2, 4, 16)


def median_round(rounds: list[dict]) -> dict:
    """One concurrency's figures over several rounds: the median of each (this machine is
    noisy), with the rounds' own figures kept."""
    figures = ("p50_ms", "p99_ms", "requests_per_s", "ping_max_ms")
    return {**rounds[0], **{k: statistics.median(r[k] for r in rounds) for k in figures},
            "requests": sum(r["requests"] for r in rounds),
            "failures": sum(r["failures"] for r in rounds),
            "rounds": [{k: r[k] for k in figures} for r in rounds]}


def serve(image: str, model_dir: Path, precision: str, body: bytes, seconds: float,
          env: dict | None = None, rounds: int = 3) -> dict:
    name, port = f"byoc-bench-{uuid.uuid4().hex[:8]}", free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    subprocess.run(docker_command(image, model_dir, port, name,
                                  {**(env or {}), "BYOC_PRECISION": precision}),
                   check=True, stdout=subprocess.DEVNULL)
    try:
        wait_until_healthy(url, name)
        result = {"precision": precision, "cold_start_s": time.perf_counter() - started}
        time.sleep(1)
        result["idle_mib"] = container_memory_mib(name)
        load(url, body, 4, 2)  # warm up
        measured = {c: [] for c in CONCURRENCIES}
        for _ in range(rounds):  # interleaved, so that a slow spell of the machine hits all
            for c in CONCURRENCIES:
                measured[c].append(load(url, body, c, seconds))
        result["load"] = [median_round(measured[c]) for c in CONCURRENCIES]
        result["loaded_mib"] = container_memory_mib(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return result


def fp32_backends(model_dir: Path, body: bytes, seconds: float) -> dict:
    """Predictions/s on one core: ONNX Runtime against PyTorch, both fp32."""
    rates = {}
    for backend in ("onnx", "torch"):
        predictor = load_predictor(model_dir, backend, 1, precision="fp32")
        count, stop = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < stop:
            predictor.predict([body], 3)
            count += 1
        rates[backend] = count / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="byoc-serve:latest")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over the concurrencies; the median round is reported")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the container (serve/settings.py), to compare")
    parser.add_argument("--precision", action="append", choices=("fp32", "int8"),
                        help="measure only these (default both)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    model_dir = make_model(RESULTS / "resnet50-model")
    body = photo()
    env = dict(item.split("=", 1) for item in args.env)
    defaults = Settings.from_environment(env)  # what the container will use
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", args.image],
                          capture_output=True, text=True, check=True).stdout.strip()
    results: dict = {"layout": defaults.layout(), "image_bytes": len(body),
                     "image_mb": int(size) / 1e6, "in_process": {}, "served": {}}
    precisions = args.precision or ["fp32", "int8"]
    results["env"] = env
    for precision in ("fp32", *precisions):  # the fp32 ceiling is every run's yardstick
        if precision not in results["in_process"]:
            results["in_process"][precision] = in_process(model_dir, precision, body,
                                                          args.seconds / 2)
    for precision in precisions:
        results["served"][precision] = serve(args.image, model_dir, precision, body,
                                             args.seconds, env, args.rounds)
    results["fp32_per_s_one_core"] = fp32_backends(model_dir, body, args.seconds / 2)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2))

    fp32_ceiling = results["in_process"]["fp32"]["ceiling_per_s"]
    print(f"ResNet-50, 133 classes, a {len(body) // 1024} kB 960x720 JPEG; {defaults.layout()}; "
          f"image {results['image_mb']:.0f} MB")
    for precision in precisions:
        own, served = results["in_process"][precision], results["served"][precision]
        print(f"\n{precision}: in process, one request on {own['cores']} cores "
              f"{own['p50_ms']:.1f} ms (p99/p50 {own['p99_ms'] / own['p50_ms']:.2f}); one model "
              f"per core {own['ceiling_per_s']:.1f}/s")
        print(f"  cold start (docker run -> /ping 200, after the first inference) "
              f"{served['cold_start_s']:.2f} s; memory idle {served['idle_mib']:.0f} MiB, "
              f"loaded {served['loaded_mib']:.0f} MiB")
        print("  concurrency  p50 ms  p99 ms  p99/p50   req/s  x fp32 ceiling  p50/floor  "
              "max /ping ms")
        for r in served["load"]:
            print(f"  {r['concurrency']:>11}  {r['p50_ms']:6.1f}  {r['p99_ms']:6.1f}  "
                  f"{r['p99_ms'] / r['p50_ms']:7.2f}  {r['requests_per_s']:6.1f}  "
                  f"{r['requests_per_s'] / fp32_ceiling:14.2f}  "
                  f"{r['p50_ms'] / own['p50_ms']:9.2f}  {r['ping_max_ms']:12.1f}")
        rate = {r["concurrency"]: r["requests_per_s"] for r in served["load"]}
        print(f"  c=16 against c=4: {rate[16] / rate[4]:.2f}x the requests/s")
    rates = results["fp32_per_s_one_core"]
    print(f"\nfp32 on one core: ONNX Runtime {rates['onnx']:.2f}/s, PyTorch {rates['torch']:.2f}/s "
          f"({rates['onnx'] / rates['torch']:.2f}x)")


if __name__ == "__main__":
    main()
