"""The trained model as an MLflow model (a pyfunc from code), answering as the CPU serving image:
it loads the same model folder with the serving image's own code (serve/predictor.py, on ONNX
Runtime, int8 when the copy passed its gate) and returns the same top-k.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict([jpeg_bytes, png_bytes])      # -> [[{"label", "index", "probability"}, ...], ...]

train/tracking.py logs it with this file as its code, artifact/ and serve/ as code paths, and
the model folder as its one artifact. Input: a list of images (bytes; base64 text through
MLflow's scoring server, which its type hint decodes).
"""
from __future__ import annotations

import base64
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

TOP_K = 3  # the serving image's default (BYOC_DEFAULT_TOP_K)


def images_of(model_input) -> list[bytes]:
    return [item if isinstance(item, (bytes, bytearray)) else base64.b64decode(item)
            for item in model_input]


class ImageClassifier(PythonModel):
    def load_context(self, context):
        from serve.predictor import load_predictor

        self.predictor = load_predictor(context.artifacts["model"], "onnx")

    def predict(self, context, model_input: list[bytes], params=None) -> list[list[dict[str, Any]]]:
        return self.predictor.predict(images_of(model_input), TOP_K)


mlflow.models.set_model(ImageClassifier())
