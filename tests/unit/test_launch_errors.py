"""A new user's first runs of the launch scripts: a bad S3 URI, no AWS credentials or no region
ends each script's entry point (`python -m scripts.X`, as the README runs them) with one line
that says what to do, no traceback, and nothing sent to AWS (every AWS endpoint of the process
points at a local server that records what reaches it)."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def aws_stand_in():
    """An HTTP server standing in for every AWS endpoint: the paths it was asked for."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_any(self):
            asked.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_any

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def commands(data, image) -> dict[str, tuple[list[str], list[str] | None]]:
    """Each launch script: a command line that would call AWS, and the same with a bad S3 URI
    (None: the script takes no S3 location)."""
    def pair(good: list[str], flag: str, bad: str) -> tuple[list[str], list[str]]:
        if flag not in good:  # a positional: replace the s3:// argument
            return good, [bad if a.startswith("s3://") else a for a in good]
        at = good.index(flag) + 1
        return good, [*good[:at], bad, *good[at + 1:]]

    return {
        "upload_data": pair([str(data), "s3://bucket/dogs"], "", "bucket/dogs"),
        "sagemaker_train": pair(["--data", "s3://bucket/dogs", "--output", "s3://bucket/runs",
                                 "--role", ROLE, "--no-wait"], "--data", "bucket/dogs"),
        "sagemaker_tune": pair(["--data", "s3://bucket/dogs", "--output", "s3://bucket/tuning",
                                "--role", ROLE, "--no-wait"], "--output", "s3://"),
        "sagemaker_deploy": pair(["--model-data", "s3://bucket/runs/model.tar.gz", "--role", ROLE],
                                 "--model-data", "bucket/runs/model.tar.gz"),
        "sagemaker_invoke": pair(["--endpoint-name", "dogs", "--async-input", "s3://bucket/in",
                                  str(image)], "--async-input", "bucket/in"),
        "sagemaker_batch_transform": pair(
            ["--model-data", "s3://bucket/runs/model.tar.gz", "--images", "s3://bucket/images",
             "--output", "s3://bucket/out", "--role", ROLE], "--output", "bucket/out"),
        "sagemaker_cleanup": (["--endpoint-name", "dogs"], None),
        "sagemaker_registry": pair(["--role", ROLE, "register", "--group", "dogs",
                                    "--model-data", "s3://bucket/runs/model.tar.gz"],
                                   "--model-data", "s3:/bucket/runs/model.tar.gz"),
        "sagemaker_pipeline": pair(["--role", ROLE, "upsert", "--data", "s3://bucket/dogs",
                                    "--output", "s3://bucket/pipeline"], "--data", "bucket/dogs"),
        "sagemaker_monitor": pair(["--role", ROLE, "create", "--endpoint-name", "dogs",
                                   "--output", "s3://bucket/monitoring"], "--output",
                                  "bucket/monitoring"),
    }


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}
REGION = {"AWS_DEFAULT_REGION": "eu-west-1"}
CASES = {  # (environment, whether the command has a bad S3 URI, what the line says)
    "bad S3 URI": ({**CREDENTIALS, **REGION}, True, "is not an S3 location: write s3://"),
    "no credentials": (REGION, False, "no AWS credentials: run `aws configure`"),
    "no region": (CREDENTIALS, False, "no AWS region: pass --region"),
}
RUNS = [(script, case) for script, (_, bad) in commands("data", "image").items()
        for case, (_, with_bad_uri, _) in CASES.items() if bad is not None or not with_bad_uri]


@pytest.mark.parametrize("script, case", RUNS)
def test_a_new_users_mistakes_are_one_line_and_nothing_reaches_aws(script, case, aws_stand_in,
                                                                  small_data_master, tmp_path):
    url, asked = aws_stand_in
    image = next((small_data_master / "test").rglob("*.png"))
    good, bad = commands(small_data_master, image)[script]
    variables, with_bad_uri, says = CASES[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    env.update({"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": url, **variables})
    asked.clear()
    result = subprocess.run([sys.executable, "-m", f"scripts.{script}",
                             *(bad if with_bad_uri else good)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr[-3000:]
    assert asked == []
