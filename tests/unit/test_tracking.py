"""Training records itself in MLflow, checked through a real MLflow server (SQLite backend store,
artifacts served by the server) and read back with MLflow's own client: the run, its parameters,
the per-epoch history, the rules' counts, the artifacts and a model that mlflow.pyfunc loads and
that answers as the serving code does; a server stopped mid-training, a spot restart, a failed
run, a server required but unreachable, and an MLflow App's ARN resolved and signed by the
sagemaker-mlflow plugin."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.local_endpoint import free_port
from scripts.local_mlflow import start as start_server
from scripts.local_mlflow import stop as stop_server
from tests.conftest import ROOT, mlflow_tracking_uri, mlflow_training_view, rendered_dom, tiny_args
from tests.unit.test_training import wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start_server(tmp_path_factory.mktemp("mlflow"))
    yield url
    stop_server(process)


def train_cmd(data, out, **overrides) -> list[str]:
    return [sys.executable, "-m", "train.train", "--data-dir", str(data), "--output-root",
            str(out), "--cache-dir", str(out / "cache"),
            *tiny_args(**{"log_every_steps": 1, **overrides})]


def tracked(url: str, experiment: str, job: str, **env) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": experiment,
            "TRAINING_JOB_NAME": job, **env}


def runs_of(url: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_job_records_its_run_and_a_model_that_answers_as_the_server(server, small_data,
                                                                      tmp_path):
    from mlflow import MlflowClient

    from train.tracking import encode_tags

    out = tmp_path / "run"
    # the launchers' tags, values with the encoding's own separators among them
    extra_tags = {"team": "vision", "study": "dogs,v2", "note": "a=b, 100%"}
    result = subprocess.run(train_cmd(small_data, out, epochs=3), cwd=ROOT, text=True,
                            capture_output=True, timeout=900,
                            env=tracked(server, "shapes", "job-recorded",
                                        BYOC_MLFLOW_TAGS=encode_tags(extra_tags)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resolving request headers" not in result.stdout + result.stderr  # sagemaker-mlflow
    [run] = runs_of(server, "shapes")
    client = MlflowClient(server)
    assert run.info.status == "FINISHED" and run.info.run_name == "job-recorded"
    params = run.data.params
    assert params["epochs"] == "3" and params["lr"] == "0.003"
    assert params["label_smoothing"] == "0.1"  # a default, as resolved
    assert params["hidden_units"] == "[16]"
    tags = run.data.tags
    assert (tags["job"], tags["instance_type"]) == ("job-recorded", "local")
    assert {key: tags.get(key) for key in extra_tags} == extra_tags
    assert tags["model_location"] == str(out / "model")
    history = json.loads((out / "output" / "data" / "history.json").read_text())
    for key in ("valid_acc", "train_loss", "valid_best_acc"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, round(m.value, 6)) for m in logged] == [
            (h["epoch"], round(h[key], 6)) for h in history], key
    rules = client.get_metric_history(run.info.run_id, "rule_exploding_tensor")
    assert [m.step for m in rules] == [1, 2, 3] and {m.value for m in rules} == {0.0}
    evaluation = json.loads((out / "output" / "data" / "evaluation.json").read_text())
    assert run.data.metrics["test_top1"] == pytest.approx(evaluation["test_top1"])
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {f"reports/{name}" for name in ("evaluation.json", "rule_report.json",
                                           "training_report.html", "confusion_matrix.png",
                                           "manifest.json")} <= reports

    import mlflow

    with mlflow_tracking_uri(server):
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    images = sorted((small_data / "test").glob("*/*"))
    answers = model.predict([p.read_bytes() for p in images])
    from serve.predictor import load_predictor

    served = load_predictor(out / "model", "onnx").predict([p.read_bytes() for p in images], 3)
    assert [a[0]["label"] for a in answers] == [s[0]["label"] for s in served]

    # The page the job's log gives opens on the run in the UI's model-training view (its side bar
    # has the model registry), not in the GenAI view that MLflow 3 opens by default (judges,
    # prompts, agent versions).
    [page] = re.findall(r"MLflow: run \S+ \(job-recorded\) in experiment shapes: (\S+)",
                        result.stdout)
    dom = rendered_dom(page, tmp_path / "browser", budget_ms=15000)
    assert ">job-recorded<" in dom and ">Model metrics<" in dom
    assert mlflow_training_view(dom)


def test_a_server_gone_mid_training_costs_nothing_but_tracking(small_data, tmp_path):
    process, url = start_server(tmp_path / "mlflow")
    out = tmp_path / "run"
    training = subprocess.Popen(train_cmd(small_data, out, epochs=4), cwd=ROOT,
                                env=tracked(url, "gone", "job-gone"), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    log = wait_for(training, "#metrics epoch=1 ")
    stop_server(process)
    log += training.communicate(timeout=900)[0]
    assert training.returncode == 0, log[-3000:]
    assert (out / "model" / "model.onnx").is_file()
    assert log.count("cannot be reached or refused") == 1, log[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_restarted_job_continues_its_run_with_each_epoch_once(server, small_data, tmp_path,
                                                                sig):
    """A spot interruption mid-epoch (SIGTERM: the run ends KILLED; SIGKILL: it stays as it
    was), then the same job again: one run, FINISHED, each epoch once. The same job name once
    more, after it finished: a new job, in a run of its own."""
    from mlflow import MlflowClient

    out = tmp_path / "run"
    cmd = train_cmd(small_data, out, epochs=4, batch_size=4)
    experiment = f"restarted-{sig.name}"
    env = tracked(server, experiment, "job-restarted")
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    wait_for(first, "epoch 3 step 2/")
    first.send_signal(sig)
    first.communicate(timeout=120)
    [stopped] = runs_of(server, experiment)
    assert stopped.info.status == ("KILLED" if sig == signal.SIGTERM else "RUNNING")
    # The same job asked to train otherwise is refused before its run is touched.
    other = subprocess.run(train_cmd(small_data, out, epochs=4, batch_size=4, lr=0.01),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert other.returncode == 1 and "lr 0.003 -> 0.01" in other.stdout
    [run] = runs_of(server, experiment)
    assert (run.info.status, run.data.tags) == (stopped.info.status, stopped.data.tags)
    # A restart may differ where training does not: the run keeps its params, and records on.
    second = subprocess.run(train_cmd(small_data, out, epochs=4, batch_size=4,
                                      log_every_steps=2), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "MLflow: continuing run" in second.stdout
    assert "changed since: log_every_steps 1 -> 2" in second.stdout
    [run] = runs_of(server, experiment)
    assert run.info.status == "FINISHED" and run.data.params["log_every_steps"] == "1"
    steps = [m.step for m in MlflowClient(server).get_metric_history(run.info.run_id,
                                                                     "valid_acc")]
    assert steps == [1, 2, 3, 4]

    third = subprocess.run(train_cmd(small_data, out, epochs=1, batch_size=4), cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stdout[-3000:]
    assert "MLflow: continuing run" not in third.stdout
    runs = {r.info.run_id: r for r in runs_of(server, experiment)}
    [new] = set(runs) - {run.info.run_id}
    assert runs[new].info.status == runs[run.info.run_id].info.status == "FINISHED"
    assert [m.step for m in MlflowClient(server).get_metric_history(new, "valid_acc")] == [1]


def test_a_failed_job_is_a_failed_run_with_its_reason(server, small_data, tmp_path):
    shutil.rmtree(small_data / "valid")
    result = subprocess.run(train_cmd(small_data, tmp_path / "run"), cwd=ROOT, text=True,
                            capture_output=True, timeout=300,
                            env=tracked(server, "failing", "job-failing"))
    assert result.returncode == 1
    [run] = runs_of(server, "failing")
    assert run.info.status == "FAILED"
    assert "no validation channel" in run.data.tags["failure"]


def test_a_required_server_that_cannot_be_reached_stops_the_job_before_training(small_data,
                                                                               tmp_path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(train_cmd(small_data, tmp_path / "run", mlflow_required="true"),
                            cwd=ROOT, text=True, capture_output=True, timeout=300,
                            env=tracked(unreachable, "nowhere", "job-nowhere"))
    assert result.returncode == 1
    failure = (tmp_path / "run" / "output" / "failure").read_text()
    assert f"mlflow_required=true, but MLflow at {unreachable} cannot be reached" in failure
    assert "#metrics epoch=" not in result.stdout


class RecordingProxy:
    """Forwards every request to the MLflow server and keeps its method, path and headers: what
    the sagemaker-mlflow plugin sends to a SageMaker MLflow App."""

    def __init__(self, upstream: str):
        self.requests: list[tuple[str, str, dict]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests.append((self.command, self.path,
                                       {k.lower(): v for k, v in self.headers.items()}))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                request = urllib.request.Request(upstream + self.path, data=body or None,
                                                 headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, payload, kind = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as error:
                    status, payload, kind = error.code, error.read(), error.headers
                self.send_response(status)
                self.send_header("Content-Type", kind.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


APP_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-app/app-4xmplq5ok3ba"


def test_an_mlflow_apps_arn_is_resolved_and_signed_by_sagemaker_mlflow(small_data, tmp_path):
    """The job is given only the App's ARN, as SageMaker gives it. The plugin would send to the
    App's regional endpoint; SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT (the plugin's own override) points
    it here instead, at a real server whose clients write the artifacts themselves, as they write
    to the App's S3 bucket."""
    from mlflow import MlflowClient
    from sagemaker_mlflow.host_creds import get_host_creds

    assert get_host_creds(APP_ARN).host == "https://mlflow.sagemaker.eu-west-1.app.aws"
    process, url = start_server(tmp_path / "mlflow", served_artifacts=False)
    proxy = RecordingProxy(url)
    try:
        credentials = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                       "AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        env = {k: v for k, v in tracked(APP_ARN, "on-aws", "job-on-aws").items()
               if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
        result = subprocess.run(train_cmd(small_data, tmp_path / "run", epochs=2), cwd=ROOT,
                                text=True, capture_output=True, timeout=900,
                                env={**env, **credentials,
                                     "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": proxy.url})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "cannot be reached or refused" not in result.stdout + result.stderr
        [run] = runs_of(url, "on-aws")
        assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
        client = MlflowClient(url)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_acc")] == [1, 2]
        assert "reports/evaluation.json" in {
            a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    finally:
        proxy.close()
        stop_server(process)
    assert proxy.requests
    for method, path, headers in proxy.requests:
        assert headers["x-sm-mlflow-app-arn"] == APP_ARN, (method, path)
        assert headers["authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), (method, path)
        assert "/eu-west-1/sagemaker/aws4_request" in headers["authorization"], (method, path)
    paths = {path.split("?")[0] for _, path, _ in proxy.requests}
    assert {"/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/log-batch",
            "/api/2.0/mlflow/runs/update"} <= paths
