"""Classify images with a deployed endpoint, the two ways a caller does it.

    python -m scripts.sagemaker_invoke --endpoint-name dogs photo.jpg other.png [--top-k 5]
    python -m scripts.sagemaker_invoke --endpoint-name dogs --boto3 photo.jpg
    python -m scripts.sagemaker_invoke --endpoint-name dogs-async --async-input s3://BUCKET/async/in big.jpg

The SDK's Predictor (notebook style) and boto3's sagemaker-runtime invoke_endpoint both send the
image's raw bytes with its content type (image/jpeg, image/png) and read the JSON answer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from sagemaker.deserializers import JSONDeserializer
from sagemaker.predictor import Predictor
from sagemaker.serializers import IdentitySerializer

from scripts import common, local_endpoint
from util.s3 import s3_folder, split_s3_uri


class ImagePredictor(Predictor):
    """Raw image bytes in (JPEG by default; pass ContentType for PNG), JSON out."""

    def __init__(self, endpoint_name: str, sagemaker_session=None, **kwargs):
        super().__init__(endpoint_name, sagemaker_session,
                         serializer=IdentitySerializer(content_type="image/jpeg"),
                         deserializer=JSONDeserializer(), **kwargs)


def content_type(path: Path) -> str:
    """image/jpeg or image/png, the two types these callers send; anything else is refused."""
    guessed = local_endpoint.content_type(path)
    if guessed not in ("image/jpeg", "image/png"):
        raise SystemExit(f"{path}: send a .jpg, .jpeg or .png file")
    return guessed


def with_predictor(predictor: Predictor, path: Path, top_k: int = 3) -> dict:
    return predictor.predict(path.read_bytes(), initial_args={
        "ContentType": content_type(path), "Accept": "application/json",
        "CustomAttributes": f"top_k={top_k}"})


def with_boto3(runtime_client, endpoint_name: str, path: Path, top_k: int = 3) -> dict:
    response = runtime_client.invoke_endpoint(
        EndpointName=endpoint_name, ContentType=content_type(path), Accept="application/json",
        CustomAttributes=f"top_k={top_k}", Body=path.read_bytes())
    return json.loads(response["Body"].read())


def with_async(runtime_client, s3_client, endpoint_name: str, path: Path, input_prefix: str,
               top_k: int = 3, timeout_s: float = 900) -> dict:
    """Asynchronous inference: the image goes to S3, the endpoint queues the request and writes
    its answer to S3; this waits for it (or for the failure SageMaker writes instead)."""
    bucket, prefix = split_s3_uri(input_prefix)
    key = f"{s3_folder(prefix)}{uuid.uuid4().hex}{path.suffix}"
    s3_client.upload_file(str(path), bucket, key)
    response = runtime_client.invoke_endpoint_async(
        EndpointName=endpoint_name, InputLocation=f"s3://{bucket}/{key}",
        ContentType=content_type(path), Accept="application/json",
        CustomAttributes=f"top_k={top_k}")
    outputs = {"output": response["OutputLocation"], "failure": response.get("FailureLocation")}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for kind, location in outputs.items():
            if not location:
                continue
            out_bucket, out_key = split_s3_uri(location)
            try:
                body = s3_client.get_object(Bucket=out_bucket, Key=out_key)["Body"].read()
            except s3_client.exceptions.NoSuchKey:
                continue
            if kind == "failure":
                raise SystemExit(f"{path}: the endpoint failed: {body.decode(errors='replace')}")
            return json.loads(body)
        time.sleep(2)
    raise SystemExit(f"{path}: no answer at {outputs['output']} after {timeout_s:.0f} s")


def show(path: Path, answer: dict) -> None:
    print(f"{path}:")
    for p in answer["predictions"]:
        print(f"    {p['probability']:7.2%}  {p['label']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--boto3", action="store_true", help="call invoke_endpoint with boto3")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--async-input", default=None, metavar="S3_PREFIX",
                        help="an asynchronous endpoint: upload each image here and wait for its answer")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    sagemaker_session = common.session(args)
    for path in args.images:
        if args.async_input:
            session = sagemaker_session.boto_session
            answer = with_async(sagemaker_session.sagemaker_runtime_client, session.client("s3"),
                                args.endpoint_name, path, args.async_input, args.top_k)
        elif args.boto3:
            answer = with_boto3(sagemaker_session.sagemaker_runtime_client, args.endpoint_name,
                                path, args.top_k)
        else:
            answer = with_predictor(ImagePredictor(args.endpoint_name, sagemaker_session), path,
                                    args.top_k)
        show(path, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
