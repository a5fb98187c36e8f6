"""Dynamic batching (serve/batching.py) against one network run per request, in one run.

    python -m bench.batching [--seconds 6] [--max-images 8] [--wait-ms 5]

The PyTorch backend (what the GPU image runs; here on whatever device torch finds: CUDA when
there is one, else the CPU) on bench/serving.py's ResNet-50 (133 classes), N client threads each
decoding a 960x720 JPEG and asking for its prediction, as the server's request threads do:
requests/s and p50 latency for N = 1, 4, 8, 16, without batching and with it, and the images
per network run. Results also go to bench/results/batching.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench import RESULTS
from bench.model import make_model, photo
from bench.serving import in_threads
from serve.predictor import load_predictor


def measure(predictor, body: bytes, clients: int, seconds: float) -> dict:
    latencies, runs = [], []
    predictor.metrics = type("Runs", (), {
        "decoded": lambda self, s: None,
        "inferred": lambda self, s, images, precision: runs.append(images)})()
    stop = time.perf_counter() + seconds

    def client():
        while time.perf_counter() < stop:
            started = time.perf_counter()
            predictor.predict([body], 3)
            latencies.append(time.perf_counter() - started)

    wall = in_threads(client, clients)
    return {"clients": clients, "per_s": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "images_per_run": sum(runs) / max(1, len(runs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    model_dir = make_model(RESULTS / "resnet50-model")
    body = photo()
    cores = len(os.sched_getaffinity(0))
    plain = load_predictor(model_dir, "torch", cores, batch_images=1)
    batched = load_predictor(model_dir, "torch", cores, batch_images=args.max_images,
                             batch_wait_s=args.wait_ms / 1000)
    device = str(plain.backend.device)
    results = {"device": device, "max_images": args.max_images, "wait_ms": args.wait_ms,
               "runs": []}
    print(f"PyTorch on {device}, ResNet-50 (133 classes), a 960x720 JPEG per request; batches "
          f"of up to {args.max_images} within {args.wait_ms:g} ms")
    print("clients   per-request req/s  p50 ms   batched req/s  p50 ms  images/run   ratio")
    for clients in (1, 4, 8, 16):
        off = measure(plain, body, clients, args.seconds)
        on = measure(batched, body, clients, args.seconds)
        results["runs"].append({"off": off, "on": on})
        print(f"{clients:>7}   {off['per_s']:17.1f}  {off['p50_ms']:6.1f}   {on['per_s']:13.1f}  "
              f"{on['p50_ms']:6.1f}  {on['images_per_run']:10.1f}  {on['per_s'] / off['per_s']:6.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batching.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
