"""The Flask app: SageMaker's routes, GET /ping and POST /invocations; GET /execution-parameters
for batch transform; GET /metrics for Prometheus (serve/metrics.py); and, on a multi-model
endpoint, the /models API (serve/models.py).

Request bodies:
    image/jpeg, image/png, application/x-image, ...   one image's raw bytes (format sniffed)
    application/json   {"images": ["<base64>", ...]}  a small batch (data: URLs are accepted)
    application/jsonlines   one record per line (batch transform's SplitType Line, MultiRecord):
        a base64 image, bare or as a JSON string, or {"id": "...", "image": "<base64>"}; answered
        with one JSON line per record, in order: {"id", "predictions"} or {"id", "error"}
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
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    NotAcceptable,
    NotFound,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)

from artifact.content_types import JSON_TYPE, JSONLINES_TYPE, REQUEST_TYPES
from serve import metrics
from serve.models import ModelStore, StoreError
from serve.predictor import BadImage, Predictor
from serve.settings import Settings

log = logging.getLogger(__name__)

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


def read_body() -> bytes:
    """The whole body, or 413 past MAX_CONTENT_LENGTH. Werkzeug refuses a larger Content-Length
    before reading; a chunked body it caps at the limit (gunicorn marks its input terminated)
    and raises only on a read past it, which this loop makes (get_data() would stop there)."""
    chunks = []
    while chunk := request.stream.read(1 << 20):
        chunks.append(chunk)
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
    decoded = [decode_base64(text, f"images[{index}]") for index, text in enumerate(images)]
    return decoded


def decode_base64(text: str, where: str) -> bytes:
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is not valid base64") from None


def records_from_lines(body: bytes) -> list[tuple[object, bytes | None, str | None]]:
    """(id, image bytes, error) per non-empty line; a bad record gets an error, not the batch."""
    records = []
    try:
        lines = body.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadRequest("an application/jsonlines body must be UTF-8 text: one base64 image "
                         "(or {\"id\": ..., \"image\": ...}) per line") from None
    for number, line in enumerate((line.strip() for line in lines), start=1):
        if not line:
            continue
        record_id, text = None, line
        try:
            if line[0] in "{\"":
                value = json.loads(line)
                if isinstance(value, dict):
                    record_id, text = value.get("id"), value.get("image")
                else:
                    text = value
            if not isinstance(text, str):
                raise BadRequest('expected a base64 string, or an object with "image"')
            records.append((record_id, decode_base64(text, "the image"), None))
        except (BadRequest, json.JSONDecodeError) as e:
            reason = e.description if isinstance(e, BadRequest) else f"not JSON ({e})"
            records.append((record_id, None, f"line {number}: {reason}"))
    if not records:
        raise BadRequest("the application/jsonlines body has no records")
    return records


def create_app(settings: Settings, predictor: Predictor | None = None,
               store: ModelStore | None = None) -> Flask:
    """One model (predictor), or a multi-model endpoint's store."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    routes = ("GET /ping, GET /execution-parameters, GET /metrics and " +
              ("the /models API" if store else "POST /invocations"))
    if predictor is not None:
        predictor.metrics = metrics
        metrics.model_served(predictor.model_info())

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "(no route)"
        metrics.observe_request(rule, request.method, response.status_code,
                                g.get("started", time.perf_counter()))
        return response

    @app.get("/metrics")
    def scrape():
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/ping")
    def ping():
        # The app exists only after the model loaded and its warm-up prediction passed.
        if store is not None:
            return json_response({"status": "healthy", "models": len(store)})
        return json_response({"status": "healthy", "model": predictor.model_info()})

    @app.get("/execution-parameters")
    def execution_parameters():
        """Batch transform asks this before sending data."""
        return json_response({
            "MaxConcurrentTransforms": settings.concurrency,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": max(1, settings.max_payload_bytes // 2**20),
        })

    def invoke(predictor: Predictor):
        """One invocation of predictor: every content type, top_k, and the error answers."""
        model = predictor.model_info()
        if request.accept_mimetypes and not request.accept_mimetypes.best_match(
                [JSON_TYPE, JSONLINES_TYPE]):
            raise NotAcceptable(f"Accept: {request.headers.get('Accept')} cannot be produced; "
                                f"this model answers {JSON_TYPE} (or {JSONLINES_TYPE} for "
                                f"{JSONLINES_TYPE} requests)")
        content_type = request.mimetype
        if content_type not in REQUEST_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {content_type or '(none)'!r} is not supported; send one of "
                f"{', '.join(REQUEST_TYPES)}")
        k = requested_top_k(settings.default_top_k)
        body = read_body()
        if content_type == JSONLINES_TYPE:
            return jsonlines_answer(predictor, records_from_lines(body), k)
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

    def jsonlines_answer(predictor: Predictor, records, k: int) -> Response:
        """Records in chunks of max_batch_images; a bad image answers its own error line."""
        lines = []
        for start in range(0, len(records), settings.max_batch_images):
            chunk = records[start:start + settings.max_batch_images]
            readable = [i for i, (_, _, error) in enumerate(chunk) if error is None]
            answers = dict(zip(readable, predictor.classify([chunk[i][1] for i in readable], k)))
            for i, (record_id, _, error) in enumerate(chunk):
                line = {} if record_id is None else {"id": record_id}
                answer = answers.get(i)
                if isinstance(answer, list):
                    line["predictions"] = answer
                else:
                    line["error"] = error or f"record {start + i + 1}: {answer}"
                lines.append(json.dumps(line))
        return Response("\n".join(lines) + "\n", mimetype=JSONLINES_TYPE)

    if store is None:
        @app.post("/invocations")
        def invocations():
            return invoke(predictor)
    else:
        add_model_routes(app, store, invoke)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 404 and error.description == NotFound.description:
            error.description = f"no route {request.path}: this server answers {routes}"
        elif error.code == 405:
            error.description = (f"{request.method} {request.path} is not allowed: this server "
                                 f"answers {routes}")
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


def add_model_routes(app: Flask, store: ModelStore, invoke) -> None:
    """SageMaker's multi-model API over the store."""

    def describe(entry) -> dict:
        return {"modelName": entry.name, "modelUrl": entry.url,
                "memoryMiB": round(entry.memory_bytes / 2**20, 1),
                "model": entry.predictor.model_info()}

    @app.errorhandler(StoreError)
    def store_error(error: StoreError):
        log.warning("%s %s -> %d: %s", request.method, request.path, error.status, error)
        return json_response({"error": str(error), "status": error.status}, error.status)

    @app.post("/models")
    def load_model():
        usage = 'send {"model_name": "...", "url": "/opt/ml/models/<name>/model"}'
        try:
            document = json.loads(request.get_data() or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON ({e}): {usage}") from None
        if not isinstance(document, dict) or not all(
                isinstance(document.get(k), str) and document.get(k) for k in ("model_name", "url")):
            raise BadRequest(f"model_name and url are required: {usage}")
        entry = store.load(document["model_name"], document["url"])
        entry.predictor.metrics = metrics
        metrics.model_served(entry.predictor.model_info())
        return json_response({"status": f"model {entry.name!r} loaded", **describe(entry)})

    @app.get("/models")
    def list_models():
        try:
            size = int(request.args.get("page_size") or request.args.get("limit") or 100)
        except ValueError:
            raise BadRequest("page_size must be a whole number") from None
        if size < 1:
            raise BadRequest("page_size must be at least 1")
        entries, token = store.page(size, request.args.get("next_page_token"))
        body = {"models": [{"modelName": e.name, "modelUrl": e.url} for e in entries]}
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    @app.get("/models/<name>")
    def describe_model(name):
        return json_response(describe(store.get(name)))

    @app.delete("/models/<name>")
    def unload_model(name):
        metrics.model_served(store.unload(name).predictor.model_info(), served=False)
        return json_response({"status": f"model {name!r} unloaded"})

    @app.post("/models/<name>/invoke")
    def invoke_model(name):
        return invoke(store.get(name).predictor)

    @app.post("/invocations")
    def invocations():
        raise BadRequest("this is a multi-model endpoint: invoke a model with "
                         "POST /models/<name>/invoke (the SDK's target_model, or TargetModel)")
