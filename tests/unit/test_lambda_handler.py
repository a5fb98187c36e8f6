"""scripts/lambda_handler.py against a real server process (through the SDK's local runtime
client, which speaks to it as invoke_endpoint does) and, for S3 events, moto's S3."""
from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.stub import Stubber
from sagemaker.core.local.local_session import LocalSagemakerRuntimeClient

from scripts import lambda_handler
from tests.conftest import MOTO_REGION as REGION
from tests.unit.test_server import start, wait_ready


@pytest.fixture(scope="module")
def runtime(trained_model):
    process, url = start(trained_model)
    try:
        wait_ready(process, url)
        yield LocalSagemakerRuntimeClient(config={"local": {"serving_port": int(url.rsplit(":", 1)[1])}})
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def png(small_data_master) -> bytes:
    return next(iter(sorted(small_data_master.glob("test/*/*.png")))).read_bytes()


def test_an_api_gateway_image_is_classified(runtime, png):
    event = {"headers": {"Content-Type": "image/png"}, "isBase64Encoded": True,
             "body": base64.b64encode(png).decode()}
    answer = lambda_handler.handle(event, runtime, None, "dogs", top_k=2)
    assert answer["statusCode"] == 200 and answer["headers"]["Content-Type"] == "application/json"
    assert len(json.loads(answer["body"])["predictions"]) == 2


def test_an_api_gateway_request_without_a_body_is_a_400(runtime):
    answer = lambda_handler.handle({"headers": {}, "body": None}, runtime, None, "dogs")
    assert answer["statusCode"] == 400 and "no body" in json.loads(answer["body"])["error"]


def test_s3_events_classify_each_new_object(runtime, png, aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="uploads", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="uploads", Key="in/my dog.png", Body=png)
    event = {"Records": [{"s3": {"bucket": {"name": "uploads"}, "object": {"key": "in/my+dog.png"}}}]}
    [result] = lambda_handler.handle(event, runtime, s3, "dogs")["results"]
    assert (result["key"], result["status"], len(result["predictions"])) == ("in/my dog.png", 200, 3)


def test_the_containers_error_reaches_the_caller_with_its_status():
    """A real endpoint's 4xx arrives from boto3 as ModelError; only AWS makes one, so stub it."""
    client = boto3.client("sagemaker-runtime", region_name=REGION, aws_access_key_id="x",
                          aws_secret_access_key="x")
    message = json.dumps({"error": "Content-Type 'text/plain' is not supported", "status": 415})
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                              modeled_fields={"OriginalStatusCode": 415, "OriginalMessage": message})
        answer = lambda_handler.handle({"headers": {"content-type": "text/plain"}, "body": "hi"},
                                       client, None, "dogs")
    assert answer["statusCode"] == 415 and json.loads(answer["body"])["status"] == 415
