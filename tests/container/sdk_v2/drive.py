"""A user still on SDK v2 drives the kit's images in v2's local mode, with nothing of the kit but
the images: an Estimator trains on two instances, a Model deploys the model.tar.gz, a Predictor
classifies a PNG, and the endpoint is deleted. Run in an environment of SDK v2 alone (v2 and v3
cannot share one) by tests/container/test_sdk_v2_local.py; prints the answer as JSON.

    python drive.py TRAIN_IMAGE SERVE_IMAGE DATA_FOLDER OUTPUT_FOLDER IMAGE.png PORT
"""
import json
import os
import sys
import time
import urllib.request

import boto3
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession
from sagemaker.model import Model
from sagemaker.predictor import Predictor
from sagemaker.serializers import IdentitySerializer

ROLE = "arn:aws:iam::111111111111:role/service-role/byoc-local"


def local_session(port: int) -> LocalSession:
    """v2 local mode offline: telemetry opted out, a region and dummy credentials."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"),
                           sagemaker_config={"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {
                               "Modules": {"TelemetryOptOut": True}}}})
    session.config = {"local": {"local_code": True, "serving_port": port}}
    return session


def main(train_image, serve_image, data, output, image, port) -> None:
    session = local_session(int(port))
    estimator = Estimator(
        image_uri=train_image, role=ROLE, instance_count=2, instance_type="local",
        # v2 sends str() of each value: "3", "[16]", "False"
        hyperparameters={"architecture": "resnet18", "weights": "none", "epochs": 2,
                         "image_size": 48, "batch_size": 16, "hidden_units": [16],
                         "export_int8": False, "num_workers": 0},
        output_path=f"file://{output}", sagemaker_session=session)
    estimator.fit({name: f"file://{data}/{name}" for name in ("train", "valid")})
    model = Model(image_uri=serve_image, model_data=estimator.model_data, role=ROLE,
                  sagemaker_session=session)
    model.deploy(initial_instance_count=1, instance_type="local", endpoint_name="byoc-sdk-v2",
                 wait=False)
    deadline = time.monotonic() + 240
    while True:  # v2's own wait sleeps first; this looks first
        try:
            if urllib.request.urlopen(f"http://localhost:{port}/ping", timeout=2).status == 200:
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    predictor = Predictor("byoc-sdk-v2", session, serializer=IdentitySerializer("image/png"),
                          deserializer=JSONDeserializer())
    try:
        answer = predictor.predict(open(image, "rb").read(), initial_args={
            "ContentType": "image/png", "CustomAttributes": "top_k=2"})
    finally:
        predictor.delete_endpoint()
    print(json.dumps({"model_data": estimator.model_data, "answer": answer}))


if __name__ == "__main__":
    main(*sys.argv[1:])
