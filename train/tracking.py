"""The job's run in MLflow, when it is given a tracking server: MLFLOW_TRACKING_URI, a URL of a
server of your own, or the ARN of a SageMaker MLflow App or tracking server (the
sagemaker-mlflow plugin signs its requests with the job's credentials).

Rank 0 records, in one run of MLFLOW_EXPERIMENT_NAME (default: byoc-image-classifier), named
MLFLOW_RUN_NAME or after the job:
    params     every hyperparameter, as resolved (defaults included)
    metrics    each epoch's figures (the #metrics line's) and each rule's issue count, by epoch;
               the test figures
    tags       the job, the training image, the instance type and count, the channels, the git
               revision the image was built from (and BYOC_MLFLOW_TAGS: encode_tags)
    artifacts  evaluation.json, rule_report.json, training_report.html, confusion_matrix.png,
               manifest.json, and where the model went
    model      the model as an MLflow pyfunc (train/mlflow_model.py) that answers as the CPU
               serving image
and ends the run FINISHED, or FAILED with the failure's first line as its `failure` tag (KILLED
for a job stopped by SIGTERM, which its restart continues).

Tracking never costs the model: every request to the server goes through one background
thread, with MLflow's own retries bounded (MLFLOW_HTTP_REQUEST_MAX_RETRIES 2, timeout 20 s,
unless set); when the server cannot be reached or refuses, the job logs one warning and trains
on without it. mlflow_required=true makes the first contact (opening or continuing the run) a
condition: it fails the job before training. A spot restart continues the same run: its id is
kept beside the job's checkpoint (train/checkpoint.py), and epochs the run already has are not
logged again.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "byoc-image-classifier"
EPOCH_METRICS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "valid_best_acc",
                 "epoch_time", "images_per_sec")
ARTIFACTS = ("evaluation.json", "rule_report.json", "training_report.html",
             "confusion_matrix.png")
ROOT = Path(__file__).resolve().parent.parent  # artifact/ and serve/ go with the logged model


class TrackingUnavailable(RuntimeError):
    """mlflow_required=true, and the tracking server could not be reached or refused."""


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None


def managed(uri: str) -> bool:
    """A SageMaker MLflow App's or tracking server's ARN (sagemaker-mlflow resolves and signs
    it), not the URL of a server of one's own."""
    return uri.startswith("arn:")


def run_page(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to look at the run: its page in a server's UI, in the model-training view (MLflow
    3's UI shows a run as a GenAI evaluation unless the address asks for that view). A managed
    server's UI opens from SageMaker Studio, through a presigned URL: there, the ARN."""
    if managed(uri):
        return uri
    return (f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning")


def unreachable(uri: str, error: Exception) -> str:
    """What to say of a server that failed a request: training and tuning say it the same way."""
    return f"MLflow at {uri} cannot be reached or refused ({type(error).__name__}: {error})"


def mlflow_client(uri: str):
    """A client of the server at uri, for training, tuning and the registry alike. MLflow's own
    defaults (7 retries, 120 s each) would keep a request to a dead server going for many
    minutes; the user's settings win. sagemaker-mlflow's header provider claims every request
    and fails on a URI that is no ARN, and MLflow warns of it on each request: for a server of
    one's own, that warning says nothing."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if not managed(uri):
        logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
    from mlflow import MlflowClient

    return MlflowClient(uri)


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT


def experiment_id(client) -> str:
    """The id of experiment_name()'s experiment, made when missing."""
    name = experiment_name()
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def encode_tags(tags: dict[str, str]) -> str:
    """BYOC_MLFLOW_TAGS's value: key=value,key=value, each percent-encoded (a study named
    `dogs,v2` keeps its comma); run_tags reads it."""
    return ",".join(f"{quote(key, safe='')}={quote(value, safe='')}"
                    for key, value in tags.items())


def run_tags(job: str) -> dict[str, str]:
    """What the run is: the job, where it ran, on what data, from which image and revision."""
    tags = {"job": job,
            "training_image": os.environ.get("BYOC_TRAINING_IMAGE", ""),
            "git_revision": os.environ.get("BYOC_GIT_REVISION", ""),
            "instance_type": os.environ.get("SM_CURRENT_INSTANCE_TYPE", "local"),
            "instance_count": str(len(json.loads(os.environ.get("SM_HOSTS", '["local"]')))),
            "channels": ",".join(sorted(json.loads(os.environ.get("SM_CHANNELS", "[]"))))}
    for pair in filter(None, os.environ.get("BYOC_MLFLOW_TAGS", "").split(",")):
        key, _, value = pair.partition("=")
        tags[unquote(key.strip())] = unquote(value.strip())
    return {key: value for key, value in tags.items() if value}


class Tracker:
    """One job's run. Disabled (no tracking URI, or another rank): every call does nothing."""

    def __init__(self, uri: str | None, job: str):
        self.uri, self.job = uri, job
        self.enabled = uri is not None
        self.run_id: str | None = None
        self.failed = False  # the server failed once: tracking stopped, with one warning
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._logged_epochs: set[int] = set()
        self._logged_params: dict[str, str] = {}  # a continued run's: MLflow sets each once

    # The start: opening (or continuing) the run

    def start(self, params: dict, run_id: str | None, required: bool,
              on_run: Callable[[str], None]) -> "Tracker":
        """Open the run (continue run_id, a restart's), then log params; on_run(run id) keeps
        the id beside the checkpoint. required: in this thread, failing the job if the server
        cannot be reached; else in the background, like everything else."""
        if not self.enabled:
            return self

        def open_run():
            self._open(run_id, on_run)
            self._log_params(params)

        if required:
            try:
                open_run()
            except Exception as e:
                raise TrackingUnavailable(f"mlflow_required=true, but {unreachable(self.uri, e)}; "
                                          "training did not start") from None
        else:
            self._submit(open_run)
        self._thread = threading.Thread(target=self._serve, name="mlflow", daemon=True)
        self._thread.start()
        return self

    def _client(self):
        return mlflow_client(self.uri)

    def _open(self, run_id: str | None, on_run: Callable[[str], None]) -> None:
        client = self._client()
        if run_id:
            client.update_run(run_id, status="RUNNING")
            self._logged_epochs = {m.step for m in client.get_metric_history(run_id, "valid_acc")}
            run = client.get_run(run_id)
            self._logged_params = dict(run.data.params)
            log.info("MLflow: continuing run %s: %s", run_id,
                     run_page(self.uri, run.info.experiment_id, run_id))
        else:
            run_name = os.environ.get("MLFLOW_RUN_NAME", "").strip() or self.job
            run = client.create_run(experiment_id(client), run_name=run_name,
                                    tags=run_tags(self.job))
            run_id = run.info.run_id
            log.info("MLflow: run %s (%s) in experiment %s: %s", run_id, run_name,
                     experiment_name(), run_page(self.uri, run.info.experiment_id, run_id))
        self.run_id = run_id
        on_run(run_id)

    def _log_params(self, params: dict) -> None:
        """The params the run does not have yet. A continued run keeps those it has: MLflow
        refuses to change a param, and a restart may differ only where training does not
        (log_every_steps, say: train.train refuses the rest before the run is reopened)."""
        from mlflow.entities import Param

        values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        changed = {k: v for k, v in values.items()
                   if k in self._logged_params and self._logged_params[k] != v}
        if changed:
            log.info("MLflow: the continued run keeps its params; changed since: %s",
                     ", ".join(f"{k} {self._logged_params[k]} -> {v}" for k, v in changed.items()))
        new = [Param(k, v) for k, v in values.items() if k not in self._logged_params]
        if new:
            self._client().log_batch(self.run_id, params=new)

    # What the job hands over, as it goes

    def epochs(self, history: list[dict], rule_counts: dict[str, int]) -> None:
        """Every epoch of history the run does not have yet, and, at the last, the rules'
        issue counts so far."""
        if not self.enabled:
            return
        history, counts = [dict(h) for h in history], dict(rule_counts)

        def log_epochs():
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(key, float(h[key]), now, h["epoch"]) for h in history
                       if h["epoch"] not in self._logged_epochs for key in EPOCH_METRICS]
            if history:
                metrics += [Metric(f"rule_{rule}", float(count), now, history[-1]["epoch"])
                            for rule, count in counts.items()]
            for start in range(0, len(metrics), 500):  # log_batch takes at most 1000
                self._client().log_batch(self.run_id, metrics=metrics[start:start + 500])
            self._logged_epochs |= {h["epoch"] for h in history}

        self._submit(log_epochs)

    def finish(self, metrics: dict, output_data_dir: Path, model_dir: Path,
               model_location: str) -> None:
        """The test figures, the reports, where the model went, the model, and FINISHED."""
        if not self.enabled:
            return

        def log_outcome():
            import mlflow
            from mlflow.entities import Metric

            client = self._client()
            now = int(time.time() * 1000)
            client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), now, 0) for k, v in metrics.items()
                if isinstance(v, (int, float))])
            for name in ARTIFACTS:
                if (output_data_dir / name).is_file():
                    client.log_artifact(self.run_id, str(output_data_dir / name), "reports")
            client.log_artifact(self.run_id, str(model_dir / "manifest.json"), "reports")
            client.set_tag(self.run_id, "model_location", model_location)
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=self.run_id):  # ends the run FINISHED
                mlflow.pyfunc.log_model(
                    name="model", python_model=str(ROOT / "train" / "mlflow_model.py"),
                    artifacts={"model": str(model_dir)},
                    code_paths=[str(ROOT / "artifact"), str(ROOT / "serve")],
                    pip_requirements=["onnxruntime", "numpy", "pillow"])

        self._submit(log_outcome)

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """FAILED, with the failure's first line as the `failure` tag; KILLED for a job stopped
        by SIGTERM (a spot restart sets it RUNNING again)."""
        if not self.enabled:
            return

        def log_failure():
            client = self._client()
            client.set_tag(self.run_id, "failure", reason.splitlines()[0][:5000])
            client.set_terminated(self.run_id, status)

        self._submit(log_failure)

    def close(self, timeout_s: float = 300) -> None:
        """Wait (at most timeout_s) for what was handed over to reach the server."""
        if self._thread is None:
            return
        self._work.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("MLflow: still sending after %.0f s; the job ends without waiting",
                        timeout_s)

    # The background thread

    def _submit(self, work: Callable[[], None]) -> None:
        self._work.put(work)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:  # opening the run comes first
            if self.failed:
                continue
            try:
                work()
            except Exception as e:
                self.failed = True
                log.warning("%s: training goes on without tracking; the reports are in "
                            "output/data as always", unreachable(self.uri, e))
