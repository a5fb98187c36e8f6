"""Classify images with a deployed endpoint, the two ways a caller does it.

    python -m scripts.sagemaker_invoke --endpoint-name dogs photo.jpg other.png [--top-k 5]
    python -m scripts.sagemaker_invoke --endpoint-name dogs --boto3 photo.jpg
    python -m scripts.sagemaker_invoke --endpoint-name dogs --inference-component dogs-model photo.jpg
    python -m scripts.sagemaker_invoke --endpoint-name dogs-many --target-model dogs-v2.tar.gz photo.jpg
    python -m scripts.sagemaker_invoke --endpoint-name dogs-async --async-input s3://BUCKET/async/in big.jpg

SDK v3's Endpoint resource (notebook style) and boto3's sagemaker-runtime invoke_endpoint both
send the image's raw bytes with its content type (image/jpeg, image/png) and read the JSON
answer; an endpoint of inference components is addressed by component, a multi-model endpoint
by the model.tar.gz's path under its prefix. In local mode both go to the local runtime client,
which speaks to the container as SageMaker does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from artifact.content_types import JPEG_TYPE, JSON_TYPE, PNG_TYPE
from scripts import common, local_endpoint
from util.s3 import s3_folder, split_s3_uri


def content_type(path: Path) -> str:
    """image/jpeg or image/png, the two types these callers send; anything else is refused."""
    guessed = local_endpoint.content_type(path)
    if guessed not in (JPEG_TYPE, PNG_TYPE):
        raise SystemExit(f"{path}: send a .jpg, .jpeg or .png file")
    return guessed


def request(path: Path, top_k: int, component: str | None = None,
            target_model: str | None = None) -> dict:
    """InvokeEndpoint's fields for one image, as both callers send them."""
    fields = {"ContentType": content_type(path), "Accept": JSON_TYPE,
              "CustomAttributes": f"top_k={top_k}", "Body": path.read_bytes()}
    if component:
        fields["InferenceComponentName"] = component
    if target_model:
        fields["TargetModel"] = target_model
    return fields


def with_endpoint(endpoint, path: Path, top_k: int = 3, component: str | None = None,
                  target_model: str | None = None) -> dict:
    """Through SDK v3's Endpoint resource (sagemaker.core.resources.Endpoint)."""
    from sagemaker.core.utils.utils import pascal_to_snake

    fields = {pascal_to_snake(name): value
              for name, value in request(path, top_k, component, target_model).items()}
    body = endpoint.invoke(**fields).body
    return json.loads(body.read() if hasattr(body, "read") else body)


def with_boto3(runtime_client, endpoint_name: str, path: Path, top_k: int = 3,
               component: str | None = None, target_model: str | None = None) -> dict:
    """Through boto3's sagemaker-runtime client (or local mode's, which takes the same call)."""
    response = runtime_client.invoke_endpoint(EndpointName=endpoint_name,
                                              **request(path, top_k, component, target_model))
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
        ContentType=content_type(path), Accept=JSON_TYPE,
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
    parser.add_argument("--inference-component", default=None,
                        help="the endpoint's inference component to ask (sagemaker_deploy "
                             "--inference-component)")
    parser.add_argument("--target-model", default=None, metavar="PATH",
                        help="a multi-model endpoint's model: its model.tar.gz's path under the "
                             "endpoint's prefix (sagemaker_deploy --multi-model)")
    parser.add_argument("--boto3", action="store_true", help="call invoke_endpoint with boto3")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--async-input", default=None, metavar="S3_PREFIX",
                        help="an asynchronous endpoint: upload each image here and wait for its answer")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.async_input and (args.inference_component or args.target_model):
        parser.error("--async-input with --inference-component or --target-model: asynchronous "
                     "endpoints have neither inference components nor multiple models")
    common.check_s3_uri("--async-input", args.async_input, local_mode=False)
    target = common.launch(args)
    sagemaker_session = common.session(target)
    runtime = sagemaker_session.sagemaker_runtime_client
    for path in args.images:
        if args.async_input:
            answer = with_async(runtime, sagemaker_session.boto_session.client("s3"),
                                args.endpoint_name, path, args.async_input, args.top_k)
        elif args.boto3 or target.local:
            answer = with_boto3(runtime, args.endpoint_name, path, args.top_k,
                                args.inference_component, args.target_model)
        else:
            from sagemaker.core.resources import Endpoint

            endpoint = Endpoint.get(args.endpoint_name, session=sagemaker_session.boto_session,
                                    region=sagemaker_session.boto_region_name)
            answer = with_endpoint(endpoint, path, args.top_k, args.inference_component,
                                   args.target_model)
        show(path, answer)
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
