"""The training image records its job in a real MLflow server, run as SageMaker runs it: the
job's Environment carries the tracking URI (as it does for a self-hosted server; an MLflow App's
ARN arrives the same way), and everything goes through the server, artifacts included. Read
back with MLflow's own client; the logged model, loaded with mlflow.pyfunc, answers as the
serving container does."""
from __future__ import annotations

import json
import subprocess

from scripts.local_endpoint import content_type
from scripts.local_mlflow import bridge_gateway
from scripts.local_mlflow import start as start_server
from scripts.local_mlflow import stop as stop_server
from scripts.local_training_job import docker_command, prepare_job
from tests.conftest import ROOT, mlflow_tracking_uri
from tests.container.test_serve_container import Endpoint

EPOCHS = 3


def image_revision(image: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f",
                           '{{index .Config.Labels "org.opencontainers.image.revision"}}', image],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_training_image_records_its_job_and_a_model_that_answers_as_the_serving_image(
        train_image, serve_image, demo_data, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    server, url = start_server(tmp_path / "mlflow", host=bridge_gateway())
    try:
        job = tmp_path / "job"
        prepare_job(job, demo_data, {**json.loads(
            (ROOT / "scripts" / "demo_hyperparameters.json").read_text()), "epochs": EPOCHS})
        environment = {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "dogs",
                       "BYOC_TRAINING_IMAGE": f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/"
                                              f"{train_image}",
                       "BYOC_OUTPUT_PATH": "s3://team-bucket/byoc/output"}
        result = subprocess.run(docker_command(train_image, job, demo_data, env=environment,
                                               job_name="dogs-tracked-1"),
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        client = MlflowClient(url)
        [run] = client.search_runs([client.get_experiment_by_name("dogs").experiment_id])
        assert run.info.status == "FINISHED" and run.info.run_name == "dogs-tracked-1"
        assert run.data.params["epochs"] == str(EPOCHS)
        assert run.data.params["finetune_blocks"]  # resolved defaults are there too
        tags = run.data.tags
        assert tags["training_image"] == environment["BYOC_TRAINING_IMAGE"]
        assert tags["channels"] == "test,train,valid" and tags["instance_count"] == "1"
        assert tags["git_revision"] == image_revision(train_image) != ""
        assert tags["model_location"] == ("s3://team-bucket/byoc/output/dogs-tracked-1/output/"
                                          "model.tar.gz")
        history = client.get_metric_history(run.info.run_id, "valid_acc")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        assert len(client.get_metric_history(run.info.run_id, "rule_overfit")) == EPOCHS
        reports = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id,
                                                                         "reports")}
        assert {"evaluation.json", "rule_report.json", "training_report.html",
                "confusion_matrix.png", "manifest.json"} <= reports

        with mlflow_tracking_uri(url):
            model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        images = sorted((demo_data / "test").glob("*/*"))
        logged = [answer[0]["label"] for answer in model.predict([p.read_bytes()
                                                                  for p in images])]
    finally:
        stop_server(server)
    with Endpoint(serve_image, job / "model") as endpoint:
        served = []
        for path in images:
            response = endpoint.post(path.read_bytes(), content_type(path))
            assert response.status_code == 200, response.text
            served.append(response.json()["predictions"][0]["label"])
    assert logged == served
