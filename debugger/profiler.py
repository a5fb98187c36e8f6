"""Profiling a training run: system utilisation, per-step timing, a torch.profiler trace, and
bottleneck rules over them (thresholds in debugger/config.py, PROFILER_RULES).

smdebug's own framework profiling is broken on torch >= 2 and samples no system metrics, so this
module does both: a thread samples CPU, memory, GPU utilisation and GPU memory (psutil, and
NVIDIA's management library when there is a GPU) every `interval` seconds; the training loop
reports each step's wait for data and its compute time; torch.profiler traces a few steps of the
first epoch into a TensorBoard trace.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

from debugger.config import rule_parameters
from debugger.rules import ISSUES, NO_DATA, NO_ISSUES, Verdict

log = logging.getLogger(__name__)
SAGEMAKER_PROFILER_CONFIG = Path("/opt/ml/input/config/profilerconfig.json")


def sagemaker_interval(path: Path = SAGEMAKER_PROFILER_CONFIG) -> float | None:
    """The sampling interval (s) of the job's SageMaker ProfilerConfig, when it has one. A
    malformed file is reported and ignored: profiling goes on at the hyperparameter's interval."""
    if not path.is_file():
        return None
    try:
        millis = json.loads(path.read_text()).get("ProfilingIntervalInMilliseconds")
        if millis is None:
            return None
        if isinstance(millis, bool) or not isinstance(millis, (int, float, str)) or float(millis) <= 0:
            raise ValueError(f"ProfilingIntervalInMilliseconds must be a positive number, got {millis!r}")
        return float(millis) / 1000
    except (OSError, ValueError, AttributeError) as e:
        log.error("profiler: ignoring %s (%s); sampling at the profiler_interval hyperparameter",
                  path, e)
        return None


class SystemSampler:
    """A daemon thread that samples the machine; samples: list of dicts."""

    def __init__(self, interval: float = 1.0, gpus: list[int] | None = None):
        self.interval, self.gpus = interval, gpus or []
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._nvml = None

    def start(self) -> SystemSampler:
        import psutil

        self._process = psutil.Process()
        psutil.cpu_percent()  # the first call only sets the baseline
        if self.gpus:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception as e:  # no driver library: CPU metrics only
                log.warning("profiler: no GPU metrics (%s)", e)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> dict:
        import psutil

        processes = [self._process, *self._process.children(recursive=True)]
        rss = 0
        for p in processes:  # data-loader workers count too; one may exit meanwhile
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        sample = {"t": round(time.monotonic() - self._started, 3),
                  "cpu_percent": psutil.cpu_percent(),
                  "memory_percent": psutil.virtual_memory().percent,
                  "process_rss_mb": rss / 2**20}
        if self._nvml:
            for i in self.gpus:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                sample[f"gpu{i}_percent"] = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                sample[f"gpu{i}_memory_percent"] = 100 * memory.used / memory.total
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._sample())
            except Exception as e:  # never take training down for a metric
                log.warning("profiler: sampling failed (%s); sampling stops", e)
                return

    def stop(self) -> list[dict]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.samples


class Monitor:
    """What the training loop tells the profiler. Disabled, every call does nothing."""

    def __init__(self, enabled: bool, *, interval: float = 1.0, gpus: list[int] | None = None,
                 trace_dir: Path | None = None, trace_steps: int = 0):
        self.enabled = enabled
        self.steps: list[dict] = []
        self.sampler = SystemSampler(interval, gpus) if enabled else None
        self.trace_dir, self.trace_steps = trace_dir, trace_steps if enabled else 0
        self._trace = None
        self._ready = None

    def start(self) -> Monitor:
        if self.sampler:
            self.sampler.start()
        if self.trace_steps and self.trace_dir:
            import torch

            self.trace_dir.mkdir(parents=True, exist_ok=True)
            # Skip the first step (warm-up, worker start), warm up one, record trace_steps.
            self._trace = torch.profiler.profile(
                schedule=torch.profiler.schedule(wait=1, warmup=1, active=self.trace_steps,
                                                 repeat=1),
                on_trace_ready=torch.profiler.tensorboard_trace_handler(str(self.trace_dir)),
                record_shapes=False, with_stack=False,
            )
            self._trace.start()
            self._trace_left = 2 + self.trace_steps
        return self

    def timed(self, loader, epoch: int):
        """The loader's batches; the wait for each is recorded."""
        iterator = iter(loader)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self._ready = (epoch, asked, time.perf_counter())
            yield batch

    def end_step(self, loss: float) -> None:
        if not self.enabled or self._ready is None:
            return
        epoch, asked, ready = self._ready
        done = time.perf_counter()
        self.steps.append({"epoch": epoch, "step": len(self.steps) + 1, "loss": loss,
                           "wait_s": ready - asked, "compute_s": done - ready})
        self._ready = None
        if self._trace is not None:
            self._trace.step()
            self._trace_left -= 1
            if self._trace_left <= 0:
                self._stop_trace()

    def _stop_trace(self) -> None:
        if self._trace is not None:
            self._trace.stop()
            self._trace = None
            log.info("profiler: torch.profiler trace of %d steps in %s (TensorBoard: "
                     "tensorboard --logdir %s)", self.trace_steps, self.trace_dir, self.trace_dir)

    def stop(self) -> dict:
        self._stop_trace()
        system = self.sampler.stop() if self.sampler else []
        return {"steps": self.steps, "system": system}


def _steady(steps: list[dict]) -> list[dict]:
    """Steps less the first of each epoch (workers starting, caches warming)."""
    firsts, seen = set(), set()
    for i, s in enumerate(steps):
        if s["epoch"] not in seen:
            seen.add(s["epoch"])
            firsts.add(i)
    return [s for i, s in enumerate(steps) if i not in firsts]


def evaluate(data: dict, params: dict | str | None = None) -> list[Verdict]:
    """The bottleneck rules over Monitor.stop()'s data."""
    p = rule_parameters(params)
    system, steps = data.get("system", []), _steady(data.get("steps", []))
    gpu_util = [k for k in (system[0] if system else {}) if k.endswith("_percent")
                and k.startswith("gpu") and "memory" not in k]
    gpu_mem = [k for k in (system[0] if system else {}) if k.endswith("memory_percent")
               and k.startswith("gpu")]
    cpu = np.array([s["cpu_percent"] for s in system])
    verdicts = []

    def no_gpu(rule):
        return Verdict(rule, NO_DATA, None, "no GPU metrics (a CPU run, or no NVIDIA driver)")

    r = p["cpu_bottleneck"]
    if not gpu_util or len(cpu) == 0:
        verdicts.append(no_gpu("cpu_bottleneck"))
    else:
        gpu = np.mean([[s[k] for k in gpu_util] for s in system], axis=1)
        share = float(((cpu > r["cpu_threshold"]) & (gpu < r["gpu_threshold"])).mean() * 100)
        verdicts.append(Verdict(
            "cpu_bottleneck", ISSUES if share > r["threshold"] else NO_ISSUES, None,
            f"CPU > {r['cpu_threshold']:g}% while the GPU < {r['gpu_threshold']:g}% in {share:.0f}% "
            f"of samples (limit {r['threshold']:g}%): more data-loader workers, or decode less"))

    r = p["low_gpu_utilization"]
    if not gpu_util:
        verdicts.append(no_gpu("low_gpu_utilization"))
    else:
        p95 = {k: float(np.percentile([s[k] for s in system], 95)) for k in gpu_util}
        low = {k: v for k, v in p95.items() if v < r["threshold_p95"]}
        verdicts.append(Verdict(
            "low_gpu_utilization", ISSUES if low else NO_ISSUES, None,
            f"95th percentile GPU utilisation {', '.join(f'{k} {v:.0f}%' for k, v in p95.items())}"
            f" (limit {r['threshold_p95']:g}%)"))

    r = p["dataloader_bound"]
    if not steps:
        verdicts.append(Verdict("dataloader_bound", NO_DATA, None, "fewer than 2 steps per epoch"))
    else:
        fractions = np.array([s["wait_s"] / max(s["wait_s"] + s["compute_s"], 1e-9) for s in steps])
        share = float((fractions > r["wait_fraction"]).mean() * 100)
        verdicts.append(Verdict(
            "dataloader_bound", ISSUES if share > r["threshold"] else NO_ISSUES, None,
            f"{share:.0f}% of steps waited for data over {r['wait_fraction']:.0%} of their time "
            f"(limit {r['threshold']:g}%; median wait {np.median(fractions):.0%}): raise "
            "num_workers, or cache decoded images"))

    r = p["step_outlier"]
    if len(steps) < 3:
        verdicts.append(Verdict("step_outlier", NO_DATA, None, f"{len(steps)} steady steps"))
    else:
        durations = np.array([s["wait_s"] + s["compute_s"] for s in steps])
        limit = float(np.median(durations) + r["stddev"] * durations.std())
        slow = [s["step"] for s, d in zip(steps, durations) if d > limit]
        verdicts.append(Verdict(
            "step_outlier", ISSUES if len(slow) > r["n_outliers"] else NO_ISSUES,
            slow[0] if len(slow) > r["n_outliers"] else None,
            f"{len(slow)} steps slower than median + {r['stddev']:g} std ({limit * 1000:.0f} ms; "
            f"limit {r['n_outliers']} steps)"))

    r = p["memory_increase"]
    if len(system) < 16:
        verdicts.append(Verdict("memory_increase", NO_DATA, None,
                                f"{len(system)} system samples; need 16"))
    else:
        # The first quarter is start-up (caches, workers, allocator): growth counts from the second.
        quarter = len(system) // 4
        grown = []
        for key in ["process_rss_mb", *gpu_mem]:
            before = np.mean([s[key] for s in system[quarter:2 * quarter]])
            last = np.mean([s[key] for s in system[-quarter:]])
            change = 100 * (last - before) / max(before, 1e-9)
            if change > r["increase"]:
                grown.append(f"{key} +{change:.0f}%")
        verdicts.append(Verdict(
            "memory_increase", ISSUES if grown else NO_ISSUES, None,
            (", ".join(grown) if grown else "memory steady") +
            f" from the second to the last quarter of the run (limit +{r['increase']:g}%)"))

    r = p["batch_size"]
    if not gpu_util:
        verdicts.append(no_gpu("batch_size"))
    else:
        cpu95 = float(np.percentile(cpu, 95))
        gpu95 = max(float(np.percentile([s[k] for s in system], 95)) for k in gpu_util)
        mem95 = max(float(np.percentile([s[k] for s in system], 95)) for k in gpu_mem)
        small = (cpu95 < r["cpu_threshold_p95"] and gpu95 < r["gpu_threshold_p95"]
                 and mem95 < r["gpu_memory_threshold_p95"])
        verdicts.append(Verdict(
            "batch_size", ISSUES if small else NO_ISSUES, None,
            f"95th percentiles: CPU {cpu95:.0f}%, GPU {gpu95:.0f}%, GPU memory {mem95:.0f}%"
            + (": the machine idles; try a larger batch_size" if small else "")))
    return verdicts
