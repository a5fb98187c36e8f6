"""The README's first command, scripts/run_local_flow.sh, as a newcomer runs it (the local_flow
fixture): it builds both images, trains the demo job in the training container (what
test_train_container checks of that job), records it in a local MLflow server, then serves the
model from the serving container and classifies a JPEG and a PNG. What it prints is what the
newcomer follows: each answer, place and command it names is checked here."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

from scripts.local_endpoint import wait_for_http
from tests.conftest import ROOT, mlflow_training_view, rendered_dom

DEMO_EPOCHS = int(json.loads(
    (ROOT / "scripts" / "demo_hyperparameters.json").read_text())["epochs"])


def test_the_flow_classifies_a_jpeg_and_a_png_through_the_serving_container(local_flow,
                                                                            demo_data):
    classes = {p.name for p in (demo_data / "test").iterdir()}
    answers = re.findall(r"^(\S+) \((image/\w+), \d+ kB\): [\d.]+ ms\n((?:\s+[\d.]+%\s+\S+\n)+)",
                         local_flow.output, flags=re.M)
    assert {kind for _, kind, _ in answers} == {"image/jpeg", "image/png"}, local_flow.output
    for path, _, ranked in answers:
        assert Path(path).is_relative_to(demo_data / "test")
        labels = re.findall(r"%\s+(\S+)", ranked)
        assert len(labels) == 3 and set(labels) <= classes
    assert "stopped by SIGTERM" in local_flow.output  # the endpoint is gone afterwards


def test_the_places_it_names_hold_the_job_s_model_reports_and_verdicts(local_flow):
    output = local_flow.output
    [model] = re.findall(r"model artifact in (\S+)", output)
    assert (Path(model) / "manifest.json").is_file() and (Path(model) / "model.onnx").is_file()
    [report] = re.findall(r"training report .*: (\S+)", output)
    assert "Debugger rules" in Path(report).read_text()
    [command] = re.findall(r"(tensorboard --logdir .*)$", output, flags=re.M)
    assert list(Path(shlex.split(command)[2]).glob("events.out.tfevents.*"))
    verdicts = json.loads((local_flow.work / "job/output/data/rule_report.json").read_text())
    printed = dict(re.findall(r"^  rule (\w+)\s+(\w+)$", output, flags=re.M))
    assert printed == {v["rule"]: v["status"] for v in verdicts}


def test_its_mlflow_command_reopens_the_run_it_names(local_flow, tmp_path):
    from mlflow import MlflowClient

    output = local_flow.output
    [command] = re.findall(r"^\s+(\S+ -m scripts\.local_mlflow .*)$", output, flags=re.M)
    [page] = re.findall(r"then open (\S+)", output)
    server = subprocess.Popen(shlex.split(command), cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = page.split("/#/")[0]
        assert base == f"http://127.0.0.1:{local_flow.mlflow_port}"
        wait_for_http(f"{base}/health", 120)
        client = MlflowClient(base)
        [run] = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
        assert run.info.status == "FINISHED" and run.info.run_id in page
        assert len(client.get_metric_history(run.info.run_id, "valid_acc")) == DEMO_EPOCHS
        dom = rendered_dom(page, tmp_path / "browser", budget_ms=15000)
        assert f">{run.info.run_name}<" in dom and ">Model metrics<" in dom
        assert mlflow_training_view(dom)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
