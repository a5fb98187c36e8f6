"""Runtimes and precisions for the CPU endpoint, side by side in one run, in process.

    python -m bench.precision [--seconds 5] [--rounds 3]

On bench/serving.py's ResNet-50 model folder (133 classes, random weights: the compute of a
trained one), batch 1, one and all cores, the network alone (the input already decoded): ONNX
Runtime fp32 (what the endpoint served so far), ONNX Runtime static int8 as train/quantize.py
writes it (QDQ; and QOperator), and, when the `openvino` and `nncf` packages are installed
(`pip install openvino nncf`; the serving image has neither), OpenVINO fp32, bf16 and int8
(NNCF). Rounds are interleaved and the median of each kept; every figure is also given as a
ratio to ONNX Runtime fp32 of the same thread count. Results also go to
bench/results/precision.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from artifact.manifest import ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT
from bench import RESULTS
from bench.model import CALIBRATION, calibration_batches, make_model
from train import quantize


def onnxruntime_candidates(model_dir: Path, work: Path) -> dict:
    """name -> path of an ONNX model to run on ONNX Runtime."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = model_dir / ONNX_FILE
    qdq = work / "int8-qdq.onnx"
    quantize.quantize_int8(fp32, qdq, calibration_batches())
    prepared, qoperator = work / "prepared.onnx", work / "int8-qoperator.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)

    class Reader:
        def __init__(self):
            self.batches = iter(calibration_batches())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    quantize_static(str(prepared), str(qoperator), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return {"onnxruntime fp32": fp32, "onnxruntime int8 (QDQ)": qdq,
            "onnxruntime int8 (QOperator)": qoperator}


def onnxruntime_runner(path: Path, threads: int):
    model = quantize.session(path, threads)
    return lambda x: model.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]


def openvino_runners(model_dir: Path, threads: int) -> dict:
    """name -> run(x), or {} without OpenVINO and NNCF."""
    if not (importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")):
        return {}
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_dir / ONNX_FILE))
    model.reshape([1, 3, 224, 224])
    quantized = nncf.quantize(model, nncf.Dataset(calibration_batches()),
                              subset_size=CALIBRATION)
    runners = {}
    for name, network, hint in (("openvino fp32", model, "f32"), ("openvino bf16", model, "bf16"),
                                ("openvino int8 (NNCF)", quantized, "f32")):
        compiled = core.compile_model(network, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        runners[name] = lambda x, r=request: r.infer({0: x})[0]
    return runners


def timed(run, x: np.ndarray, seconds: float) -> float:
    """Median milliseconds of run(x) over `seconds`, after a warm-up."""
    for _ in range(3):
        run(x)
    times, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    model_dir = make_model(RESULTS / "resnet50-model")
    x = calibration_batches(1)[0]
    cores = len(os.sched_getaffinity(0))
    results = {"cpu_cores": cores, "batch": 1, "ms": {}}
    with tempfile.TemporaryDirectory() as work:
        paths = onnxruntime_candidates(model_dir, Path(work))
        for threads in sorted({1, cores}):
            runners = {name: onnxruntime_runner(path, threads) for name, path in paths.items()}
            runners.update(openvino_runners(model_dir, threads))
            rounds: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.rounds):
                for name, run in runners.items():
                    rounds[name].append(timed(run, x, args.seconds))
            medians = {name: statistics.median(ms) for name, ms in rounds.items()}
            results["ms"][str(threads)] = medians
            baseline = medians["onnxruntime fp32"]
            print(f"\n{threads} thread(s), batch 1, network only:")
            print(f"  {'':30} {'ms':>8} {'vs ORT fp32':>12}")
            for name, ms in medians.items():
                print(f"  {name:30} {ms:8.2f} {baseline / ms:11.2f}x")
        results["model_mb"] = {name: round(path.stat().st_size / 2**20, 1)
                               for name, path in paths.items()}
    (RESULTS / "precision.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
