"""The Flask app: SageMaker's two routes, GET /ping and POST /invocations.

Request bodies:
    image/jpeg, image/png, application/x-image, ...   one image's raw bytes (format sniffed)
    application/json   {"images": ["<base64>", ...]}  a small batch (data: URLs are accepted)
Headers:
    X-Amzn-SageMaker-Custom-Attributes: top_k=5        how many classes to answer (default 3)
    Accept: application/json (or */*, or none)         the only format answered
Every answer, errors included, is JSON; a client's mistake is a 4xx with a message saying what to
change, never a 5xx, and no stack trace leaves the server.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import (BadRequest, HTTPException, NotAcceptable, RequestEntityTooLarge,
                                 UnsupportedMediaType)

from serve.predictor import BadImage, Predictor
from serve.settings import Settings

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff",
               "application/x-image")
JSON_TYPE = "application/json"
SUPPORTED_TYPES = IMAGE_TYPES + (JSON_TYPE,)
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def json_response(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body) + "\n", status=status, mimetype=JSON_TYPE)


def requested_top_k(default: int) -> int:
    """top_k from SageMaker's custom attributes header ("top_k=5", other keys ignored)."""
    for item in request.headers.get(CUSTOM_ATTRIBUTES, "").replace(";", ",").split(","):
        key, _, value = item.partition("=")
        if key.strip().lower() == "top_k":
            try:
                k = int(value)
            except ValueError:
                k = 0
            if k < 1:
                raise BadRequest(f"{CUSTOM_ATTRIBUTES}: top_k={value.strip()!r} must be a "
                                 "positive whole number, e.g. top_k=5")
            return k
    return default


def read_body(limit: int) -> bytes:
    """The request body, or 413 past limit bytes. A Content-Length above the limit is refused by
    Flask (MAX_CONTENT_LENGTH) before reading; a chunked body is cut off here."""
    chunks, size = [], 0
    while chunk := request.stream.read(min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


def images_from_json(body: bytes, limit: int) -> list[bytes]:
    usage = 'send {"images": ["<base64 of a JPEG or PNG file>", ...]}'
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON ({e}): {usage}") from None
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise BadRequest(f"the JSON has no non-empty list of strings under \"images\": {usage}")
    if len(images) > limit:
        raise RequestEntityTooLarge(f"{len(images)} images in one request; the limit is {limit} "
                                    "(BYOC_MAX_BATCH_IMAGES): split the batch")
    decoded = []
    for index, text in enumerate(images):
        if text.startswith("data:"):  # a data URL: data:image/png;base64,....
            text = text.partition(",")[2]
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"images[{index}] is not valid base64") from None
    return decoded


def create_app(predictor: Predictor, settings: Settings) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    model = predictor.model_info()

    @app.get("/ping")
    def ping():
        # The app exists only after the model loaded and its warm-up prediction passed.
        return json_response({"status": "healthy", "model": model})

    @app.post("/invocations")
    def invocations():
        if request.accept_mimetypes and not request.accept_mimetypes.best_match([JSON_TYPE]):
            raise NotAcceptable(f"Accept: {request.headers.get('Accept')} cannot be produced; "
                                f"this model answers {JSON_TYPE} only")
        content_type = request.mimetype
        if content_type not in SUPPORTED_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {content_type or '(none)'!r} is not supported; send one of "
                f"{', '.join(SUPPORTED_TYPES)}")
        k = requested_top_k(settings.default_top_k)
        body = read_body(settings.max_payload_bytes)
        if content_type == JSON_TYPE:
            images = images_from_json(body, settings.max_batch_images)
        else:
            images = [body]
        try:
            results = predictor.predict(images, k)
        except BadImage as e:
            raise BadRequest(str(e)) from None
        if content_type == JSON_TYPE:
            return json_response({"model": model, "results": [{"predictions": r} for r in results]})
        return json_response({"model": model, "predictions": results[0]})

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        routes = "this server answers GET /ping and POST /invocations"
        if error.code == 404:
            error.description = f"no route {request.path}: {routes}"
        elif error.code == 405:
            error.description = f"{request.method} {request.path} is not allowed: {routes}"
        elif error.code == 413 and error.description == RequestEntityTooLarge.description:
            error.description = (f"the body is larger than {settings.max_payload_bytes} bytes "
                                 "(BYOC_MAX_PAYLOAD_MB): send a smaller image")
        if error.code < 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, error.code,
                        error.description)
        return json_response({"error": error.description, "status": error.code}, error.code)

    @app.errorhandler(Exception)
    def server_error(error: Exception):
        log.exception("failed on %s %s", request.method, request.path)
        return json_response({"error": "internal error while predicting; the endpoint's log has "
                                       "the details", "status": 500}, 500)

    return app
