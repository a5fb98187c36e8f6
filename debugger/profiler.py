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
import os
import threading
import time
from pathlib import Path

import numpy as np

from debugger.config import PROFILER_RULES, rule_parameters
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
    """A daemon thread that samples the machine; samples: list of dicts, each with the global
    training step in progress when it was taken ("step", which the training loop moves on)."""

    def __init__(self, interval: float = 1.0, gpus: list[int] | None = None):
        self.interval, self.gpus = interval, gpus or []
        self.samples: list[dict] = []
        self.step = 1
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
        sample = {"t": round(time.monotonic() - self._started, 3), "step": self.step,
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


class Profiler:
    """What the training loop tells the profiler. Disabled, every call does nothing."""

    def __init__(self, enabled: bool, *, interval: float = 1.0, gpus: list[int] | None = None,
                 trace_dir: Path | None = None, trace_steps: int = 0):
        self.enabled = enabled
        self.on_gpu = bool(gpus)
        self.steps: list[dict] = []
        self.sampler = SystemSampler(interval, gpus) if enabled else None
        self.trace_dir, self.trace_steps = trace_dir, trace_steps if enabled else 0
        self._trace = None
        self._ready = None
        self._drained = (0, 0)  # steps and samples already handed to the record

    def start(self, first_step: int = 1) -> Profiler:
        """first_step: the global step training starts from (where a resumed job goes on)."""
        if self.sampler:
            self.sampler.step = first_step
            self.sampler.start()
        if self.trace_steps and self.trace_dir:
            import torch

            self.trace_dir.mkdir(parents=True, exist_ok=True)
            if not self.on_gpu:
                # Kineto asks for the GPUs when it writes the trace and logs an ERROR line when
                # there are none (gpuGetDeviceCount failed with code 35): not one on a CPU run.
                os.environ.setdefault("KINETO_LOG_LEVEL", "5")
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

    def end_step(self, step: int, loss: float) -> None:
        """step: the global training step just done."""
        if not self.enabled or self._ready is None:
            return
        epoch, asked, ready = self._ready
        done = time.perf_counter()
        self.steps.append({"epoch": epoch, "step": step, "loss": loss,
                           "wait_s": ready - asked, "compute_s": done - ready})
        self._ready = None
        if self.sampler:
            self.sampler.step = step + 1
        if self._trace is not None:
            self._trace.step()
            self._trace_left -= 1
            if self._trace_left <= 0:
                self._stop_trace()

    def drain(self) -> tuple[list[dict], list[dict]]:
        """The steps and system samples not yet drained."""
        steps_seen, samples_seen = self._drained
        samples = list(self.sampler.samples) if self.sampler else []
        self._drained = (len(self.steps), len(samples))
        return self.steps[steps_seen:], samples[samples_seen:]

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


def gpu_keys(system: list[dict]) -> tuple[list[str], list[str]]:
    """(GPU utilisation keys, GPU memory keys) of the samples."""
    keys = list(system[0]) if system else []
    return ([k for k in keys if k.startswith("gpu") and k.endswith("_percent")
             and "memory" not in k],
            [k for k in keys if k.startswith("gpu") and k.endswith("memory_percent")])


def no_gpu(rule: str) -> Verdict:
    return Verdict(rule, NO_DATA, None, "no GPU metrics (a CPU run, or no NVIDIA driver)")


def verdict(rule: str, issues: int, step: int | None, why: str) -> Verdict:
    return Verdict(rule, ISSUES if issues else NO_ISSUES, step if issues else None, why, issues)


def cpu_bottleneck(system: list[dict], steps: list[dict], threshold: float,
                   cpu_threshold: float, gpu_threshold: float) -> Verdict:
    gpu_util, _ = gpu_keys(system)
    if not gpu_util:
        return no_gpu("cpu_bottleneck")
    cpu = np.array([s["cpu_percent"] for s in system])
    gpu = np.mean([[s[k] for k in gpu_util] for s in system], axis=1)
    starved = (cpu > cpu_threshold) & (gpu < gpu_threshold)
    share = float(starved.mean() * 100)
    return verdict("cpu_bottleneck", int(starved.sum()) if share > threshold else 0, None,
                   f"CPU > {cpu_threshold:g}% while the GPU < {gpu_threshold:g}% in {share:.0f}% "
                   f"of samples (limit {threshold:g}%): more data-loader workers, or decode less")


def low_gpu_utilization(system: list[dict], steps: list[dict], threshold_p95: float) -> Verdict:
    gpu_util, _ = gpu_keys(system)
    if not gpu_util:
        return no_gpu("low_gpu_utilization")
    p95 = {k: float(np.percentile([s[k] for s in system], 95)) for k in gpu_util}
    low = [k for k, v in p95.items() if v < threshold_p95]
    return verdict("low_gpu_utilization", len(low), None,
                   f"95th percentile GPU utilisation "
                   f"{', '.join(f'{k} {v:.0f}%' for k, v in p95.items())} "
                   f"(limit {threshold_p95:g}%)")


def dataloader_bound(system: list[dict], steps: list[dict], threshold: float,
                     wait_fraction: float) -> Verdict:
    if not steps:
        return Verdict("dataloader_bound", NO_DATA, None, "fewer than 2 steps per epoch")
    fractions = np.array([s["wait_s"] / max(s["wait_s"] + s["compute_s"], 1e-9) for s in steps])
    waiting = [s["step"] for s, f in zip(steps, fractions) if f > wait_fraction]
    share = 100 * len(waiting) / len(steps)
    return verdict("dataloader_bound", len(waiting) if share > threshold else 0,
                   waiting[0] if waiting else None,
                   f"{share:.0f}% of steps waited for data over {wait_fraction:.0%} of their time "
                   f"(limit {threshold:g}%; median wait {np.median(fractions):.0%}): raise "
                   "num_workers, or cache decoded images")


def step_outlier(system: list[dict], steps: list[dict], stddev: float,
                 n_outliers: int) -> Verdict:
    if len(steps) < 3:
        return Verdict("step_outlier", NO_DATA, None, f"{len(steps)} steady steps")
    durations = np.array([s["wait_s"] + s["compute_s"] for s in steps])
    limit = float(np.median(durations) + stddev * durations.std())
    slow = [s["step"] for s, d in zip(steps, durations) if d > limit]
    return verdict("step_outlier", len(slow) if len(slow) > n_outliers else 0,
                   slow[0] if slow else None,
                   f"{len(slow)} steps slower than median + {stddev:g} std ({limit * 1000:.0f} "
                   f"ms; limit {n_outliers} steps)")


def memory_increase(system: list[dict], steps: list[dict], increase: float) -> Verdict:
    if len(system) < 16:
        return Verdict("memory_increase", NO_DATA, None, f"{len(system)} system samples; need 16")
    # The first quarter is start-up (caches, workers, allocator): growth counts from the second.
    quarter = len(system) // 4
    grown = []
    for key in ["process_rss_mb", *gpu_keys(system)[1]]:
        before = np.mean([s[key] for s in system[quarter:2 * quarter]])
        last = np.mean([s[key] for s in system[-quarter:]])
        change = 100 * (last - before) / max(before, 1e-9)
        if change > increase:
            grown.append(f"{key} +{change:.0f}%")
    return verdict("memory_increase", len(grown), None,
                   (", ".join(grown) if grown else "memory steady") +
                   f" from the second to the last quarter of the run (limit +{increase:g}%)")


def batch_size(system: list[dict], steps: list[dict], cpu_threshold_p95: float,
               gpu_threshold_p95: float, gpu_memory_threshold_p95: float) -> Verdict:
    gpu_util, gpu_mem = gpu_keys(system)
    if not gpu_util:
        return no_gpu("batch_size")
    cpu95 = float(np.percentile([s["cpu_percent"] for s in system], 95))
    gpu95 = max(float(np.percentile([s[k] for s in system], 95)) for k in gpu_util)
    mem95 = max(float(np.percentile([s[k] for s in system], 95)) for k in gpu_mem)
    small = (cpu95 < cpu_threshold_p95 and gpu95 < gpu_threshold_p95
             and mem95 < gpu_memory_threshold_p95)
    return verdict("batch_size", int(small), None,
                   f"95th percentiles: CPU {cpu95:.0f}%, GPU {gpu95:.0f}%, GPU memory {mem95:.0f}%"
                   + (": the machine idles; try a larger batch_size" if small else ""))


RULE_FUNCTIONS = {f.__name__: f for f in (cpu_bottleneck, low_gpu_utilization, dataloader_bound,
                                          step_outlier, memory_increase, batch_size)}
assert set(RULE_FUNCTIONS) == set(PROFILER_RULES)


def evaluate(data: dict, params: dict | str | None = None) -> list[Verdict]:
    """The bottleneck rules over a profile: {"steps": [...], "system": [...]}."""
    p = rule_parameters(params)
    system, steps = data.get("system", []), _steady(data.get("steps", []))
    return [rule(system, steps, **p[name]) for name, rule in RULE_FUNCTIONS.items()]
