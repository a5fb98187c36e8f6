"""AWS Lambda function in front of the endpoint: an image in, the endpoint's JSON answer out.

Events it takes:
- API Gateway (REST or HTTP API) with the image as the body: binary bodies arrive base64-encoded
  (isBase64Encoded); the Content-Type header says image/jpeg or image/png. Answers the endpoint's
  JSON with its status, e.g. 415 for a wrong type, so callers see the server's message.
- S3 object-created notifications: classifies each new object; answers {"results": [...]}.

Configuration: ENDPOINT_NAME (required), TOP_K (default 3).
Deployment: handler `lambda_handler.handler`, Python 3.11+, this file alone (boto3 is in the
runtime), timeout 30 s, memory 256 MB. Its execution role needs, besides
AWSLambdaBasicExecutionRole (logs):

    {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
     "Resource": "arn:aws:sagemaker:REGION:ACCOUNT:endpoint/ENDPOINT_NAME"}
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/*"}   (S3 events)
"""
from __future__ import annotations

import base64
import json
import os
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

# Deployed as this file alone: artifact/content_types.py's names, restated.
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}
_clients: dict = {}


def client(name: str):
    if name not in _clients:  # created once per Lambda container, reused across invocations
        _clients[name] = boto3.client(name)
    return _clients[name]


def response(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body)}


def classify(runtime, endpoint: str, image: bytes, content_type: str, top_k: int) -> tuple[int, dict]:
    """(status, JSON) from the endpoint; the container's own 4xx answers pass through."""
    try:
        answer = runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType=content_type, Accept="application/json",
            CustomAttributes=f"top_k={top_k}", Body=image)
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "ModelError":  # the container answered 4xx/5xx
            status = int(e.response.get("OriginalStatusCode", 500))
            try:
                return status, json.loads(e.response.get("OriginalMessage", ""))
            except json.JSONDecodeError:
                return status, {"error": e.response.get("OriginalMessage", str(e)), "status": status}
        raise
    return 200, json.loads(answer["Body"].read())


def from_api_gateway(event: dict, runtime, endpoint: str, top_k: int) -> dict:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    body = event.get("body")
    if not body:
        return response(400, {"error": "the request has no body: send the image's bytes", "status": 400})
    image = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    content_type = headers.get("content-type", "application/x-image")
    status, answer = classify(runtime, endpoint, image, content_type, top_k)
    return response(status, answer)


def from_s3(event: dict, runtime, s3, endpoint: str, top_k: int) -> dict:
    results = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])  # S3 events URL-encode keys
        image = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        content_type = CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/x-image")
        status, answer = classify(runtime, endpoint, image, content_type, top_k)
        results.append({"bucket": bucket, "key": key, "status": status, **answer})
    return {"results": results}


def handle(event: dict, runtime, s3, endpoint: str, top_k: int = 3) -> dict:
    if "Records" in event and event["Records"] and "s3" in event["Records"][0]:
        return from_s3(event, runtime, s3, endpoint, top_k)
    return from_api_gateway(event, runtime, endpoint, top_k)


def handler(event, context):
    return handle(event, client("sagemaker-runtime"), client("s3"), os.environ["ENDPOINT_NAME"],
                  int(os.environ.get("TOP_K", "3")))
