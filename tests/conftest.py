"""Shared fixtures: generated data sets and tiny training settings."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# smdebug (read in-process by the debugger tests) needs the pure-Python protobuf runtime, chosen
# before anything imports protobuf; debugger/hook.py sets it the same way in training.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
sys.path.insert(0, str(ROOT))

from scripts.make_demo_data import generate  # noqa: E402

MOTO_REGION = "eu-west-1"

# Hyperparameters that train in seconds on a CPU: the pipeline, not the accuracy, is under test.
TINY = {
    "architecture": "resnet18", "weights": "none", "finetune_blocks": "-1", "image_size": "32",
    "epochs": "2", "batch_size": "16", "hidden_units": "[16]", "lr": "0.003",
    "num_workers": "0", "log_every_steps": "1",
}


@contextlib.contextmanager
def mlflow_tracking_uri(uri: str):
    """mlflow.set_tracking_uri for a block. MLflow also sets MLFLOW_TRACKING_URI in os.environ,
    which every later test's processes would inherit, pointing them at a stopped server."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def required(missing: str) -> None:
    """What a test needs is missing: a skip on a developer's machine, a failure under CI (CI is
    set), where no test may pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{missing} (CI is set, so the test may not be skipped)")
    pytest.skip(missing)


def rendered_dom(url: str, profile: Path, budget_ms: int = 5000) -> str:
    """The page as a real browser shows it: its DOM once headless Chromium has run its scripts
    for budget_ms of virtual time. CI installs Chromium (.ci/run) and fails without it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        required("chromium is not installed (apt-get install chromium)")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout, result.stderr[-2000:]
    return result.stdout


def mlflow_training_view(dom: str) -> bool:
    """MLflow 3.17's UI, rendered, is in its model-training view: the model registry in its side
    bar, none of the judges, prompts and agent versions of the GenAI view it opens by default."""
    return ">Model registry<" in dom and ">Judges<" not in dom


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The tests run in two pytest-xdist workers (pyproject.toml's addopts), since most of them
    keep one core busy. Each worker takes whole scopes: the container tests are one, run in
    order in one worker (they share the images they build and the demo job); each unit test
    module is one, so that its module fixtures are made once. (xdist's own xdist_group marks
    do not reach its scheduler under pytest 9: the node ids it sends leave the group out.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ContainerTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/container/"):
                return "tests/container"
            return super()._split_scope(nodeid)

    return ContainerTestsTogether(config, log)


def tiny_args(**overrides) -> list[str]:
    values = {**TINY, **{k: str(v) for k, v in overrides.items()}}
    return [arg for k, v in values.items() for arg in (f"--{k}", v)]


@pytest.fixture(scope="session")
def small_data_master(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("small") / "data", {"train": 8, "valid": 3, "test": 3})


@pytest.fixture
def small_data(small_data_master, tmp_path) -> Path:
    """A private copy of the small data set, free to damage."""
    return Path(shutil.copytree(small_data_master, tmp_path / "data"))


@pytest.fixture(scope="session")
def trained_model(small_data_master, tmp_path_factory) -> Path:
    """A model folder written by a real (tiny) training run: what serve/ is given in production."""
    import subprocess

    out = tmp_path_factory.mktemp("trained")
    cmd = [sys.executable, "-m", "train.train", "--data-dir", str(small_data_master),
           "--output-root", str(out), "--cache-dir", str(out / "cache"),
           *tiny_args(epochs=4, model_name="tiny-shapes")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "model"


@pytest.fixture(scope="session")
def phone_photo() -> dict[str, bytes]:
    """A 200-megapixel photo (16320x12240, as the largest phone cameras take) as a 3.4 MB
    baseline JPEG, and the same as a progressive JPEG."""
    import io

    from PIL import Image

    image = Image.linear_gradient("L").resize((16320, 12240)).convert("RGB")
    encoded = {}
    for name, options in (("baseline", {}), ("progressive", {"progressive": True})):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85, **options)
        encoded[name] = buffer.getvalue()
    return encoded


def moto_environment(url: str) -> dict[str, str]:
    """Environment that sends boto3 and the AWS CLI to moto at url, with its dummy account."""
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": MOTO_REGION,
            "AWS_DEFAULT_REGION": MOTO_REGION, "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            # SDK v3 checks a role with IAM's SimulatePrincipalPolicy before a job, which moto
            # does not have: the SDK's own switch turns that check off.
            "SAGEMAKER_VALIDATE_ROLE": "false"}


@pytest.fixture(scope="session")
def moto_url():
    """moto's server on 127.0.0.1: S3, STS, ECR, SageMaker, Application Auto Scaling."""
    from scripts.local_endpoint import free_port, wait_for_http

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url, 30, ready=lambda response: True,
                  stopped=lambda: None if process.poll() is None else "moto's server exited")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def aws(moto_url, monkeypatch):
    """Every boto3 client of the scripts talks to moto. s3://data/dogs holds train/ and valid/
    (a file each), s3://data/dogs-with-test also test/."""
    import boto3

    for key, value in {**moto_environment(moto_url), "IMAGE_PREFIX": "byoc"}.items():
        monkeypatch.setenv(key, value)
    session = boto3.Session(region_name=MOTO_REGION)
    s3 = session.client("s3")
    if "data" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": MOTO_REGION})
        for prefix, splits in (("dogs", ("train", "valid")),
                               ("dogs-with-test", ("train", "valid", "test"))):
            for split in splits:
                s3.put_object(Bucket="data", Key=f"{prefix}/{split}/001.Affenpinscher/a.jpg",
                              Body=b"jpeg")
    return session
