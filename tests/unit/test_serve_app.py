"""serve.app through Flask's test client, on a model folder written by a real training run."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve.app import create_app
from serve.predictor import load_predictor
from serve.settings import Settings

CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def predictor(trained_model):
    return load_predictor(trained_model, "onnx")


@pytest.fixture
def settings(trained_model):
    return Settings(model_dir=trained_model, max_payload_bytes=1024 * 1024)


@pytest.fixture
def client(predictor, settings):
    return create_app(settings, predictor=predictor).test_client()


@pytest.fixture(scope="module")
def images(small_data_master) -> dict[str, bytes]:
    """One test image of each format, of different classes."""
    test = small_data_master / "test"
    return {"jpeg": next(iter(sorted(test.glob("002.*/*.jpg")))).read_bytes(),
            "png": next(iter(sorted(test.glob("005.*/*.png")))).read_bytes()}


def post(client, body: bytes, content_type="image/jpeg", **headers):
    return client.post("/invocations", data=body, content_type=content_type, headers=headers)


def assert_error(response, status: int, *phrases: str):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == status
    for phrase in phrases:
        assert phrase in body["error"], body["error"]
    assert "Traceback" not in body["error"]


def test_ping_answers_the_model(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.get_json()["model"]["name"] == "tiny-shapes"


@pytest.mark.parametrize("content_type, key", [
    ("image/jpeg", "jpeg"), ("image/png", "png"), ("application/x-image", "jpeg"),
    ("application/x-image", "png"), ("image/jpeg; charset=binary", "jpeg"),
])
def test_an_image_body_answers_the_top_3(client, predictor, images, content_type, key):
    response = post(client, images[key], content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["model"] == predictor.model_info()
    predictions = body["predictions"]
    assert len(predictions) == 3
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    for p in predictions:
        assert predictor.manifest.classes[p["index"]] == p["label"]
    # The same answer as the predictor gives in-process, i.e. as evaluation computes it.
    assert predictions == predictor.predict([images[key]], 3)[0]


@pytest.mark.parametrize("attributes, expected", [
    ("top_k=5", 5), ("top_k=1", 1), ("trace=abc, top_k=2", 2), ("top_k=100", 6), ("trace=x", 3),
])
def test_top_k_comes_from_the_custom_attributes(client, images, attributes, expected):
    response = post(client, images["png"], **{CUSTOM: attributes})
    assert len(response.get_json()["predictions"]) == expected


@pytest.mark.parametrize("attributes", ["top_k=0", "top_k=abc", "top_k=-1"])
def test_a_bad_top_k_is_a_400(client, images, attributes):
    assert_error(post(client, images["png"], **{CUSTOM: attributes}), 400, "top_k")


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*",
                                    "text/csv;q=0.5, application/json"])
def test_json_is_answered_to_any_accept_that_takes_it(client, images, accept):
    assert post(client, images["png"], Accept=accept).status_code == 200


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/x-protobuf"])
def test_an_accept_without_json_is_a_406(client, images, accept):
    assert_error(post(client, images["png"], Accept=accept), 406, accept, "application/json")


def test_a_json_batch_answers_each_image_in_order(client, predictor, images):
    encoded = [base64.b64encode(images[k]).decode() for k in ("jpeg", "png")]
    encoded.append("data:image/png;base64," + encoded[1])
    response = post(client, json.dumps({"images": encoded}).encode(), "application/json",
                    **{CUSTOM: "top_k=2"})
    assert response.status_code == 200, response.get_data(as_text=True)
    results = response.get_json()["results"]
    expected = [predictor.predict([images[k]], 2)[0] for k in ("jpeg", "png", "png")]
    assert [r["predictions"] for r in results] == expected


@pytest.mark.parametrize("body, phrase", [
    (b"{not json", "not valid JSON"),
    (b'{"image": "abc"}', '"images"'),
    (b'{"images": []}', '"images"'),
    (b'{"images": [1, 2]}', '"images"'),
    (b'["abc"]', '"images"'),
    (b'{"images": ["%%%not base64"]}', "images[0] is not valid base64"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_a_bad_json_body_is_a_400_saying_what_to_send(client, body, phrase):
    assert_error(post(client, body, "application/json"), 400, phrase)


def test_a_bad_image_in_a_batch_is_named_by_its_index(client, images):
    encoded = [base64.b64encode(images["png"]).decode(), base64.b64encode(b"not an image").decode()]
    response = post(client, json.dumps({"images": encoded}).encode(), "application/json")
    assert_error(response, 400, "images[1]", "not an image")


def test_a_batch_above_the_limit_is_a_413(client, settings):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    encoded = [base64.b64encode(buffer.getvalue()).decode()] * (settings.max_batch_images + 1)
    response = post(client, json.dumps({"images": encoded}).encode(), "application/json")
    assert_error(response, 413, "BYOC_MAX_BATCH_IMAGES")


@pytest.mark.parametrize("content_type", ["text/csv", "application/octet-stream",
                                          "application/x-npy", ""])
def test_an_unsupported_content_type_is_a_415_listing_the_supported(client, images, content_type):
    response = client.post("/invocations", data=images["png"],
                           headers={"Content-Type": content_type} if content_type else {})
    assert_error(response, 415, "image/jpeg", "image/png", "application/json")


def test_an_empty_body_is_a_400(client):
    assert_error(post(client, b""), 400, "empty")


def test_bytes_that_are_no_image_are_a_400_naming_the_formats(client):
    assert_error(post(client, b"GIF89a but not really" * 10), 400, "not an image", "JPEG")
    assert_error(post(client, b"%PDF-1.7\n" + bytes(500), "image/png"), 400, "not an image")


def test_a_truncated_image_is_a_400(client, images):
    assert_error(post(client, images["jpeg"][: len(images["jpeg"]) // 2]), 400, "could not be decoded")
    assert_error(post(client, images["png"][: len(images["png"]) // 2], "image/png"), 400,
                 "could not be decoded")


def test_a_body_above_the_payload_limit_is_a_413(client, settings):
    assert_error(post(client, bytes(settings.max_payload_bytes + 1)), 413, "BYOC_MAX_PAYLOAD_MB")


def test_a_decompression_bomb_is_refused_before_decoding(trained_model, settings):
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")  # 144 Mpixel in ~140 kB
    predictor = load_predictor(trained_model, max_pixels=settings.max_pixels)
    client = create_app(settings, predictor=predictor).test_client()
    assert_error(post(client, buffer.getvalue(), "image/png"), 400, "144000000 pixels",
                 "BYOC_MAX_PIXELS")
    buffer = io.BytesIO()
    Image.new("1", (16000, 16000)).save(buffer, format="PNG")  # 256 Mpixel: above Pillow's limit
    assert_error(post(client, buffer.getvalue(), "image/png"), 400, "256000000 pixels")


def test_a_200_megapixel_phone_photo_classifies_with_the_default_limits(trained_model, predictor,
                                                                       phone_photo):
    settings = Settings.from_environment({"BYOC_MODEL_DIR": str(trained_model)})
    assert settings.max_pixels == 50_000_000 and len(phone_photo["baseline"]) < 6 * 2**20
    predictor = load_predictor(trained_model, "onnx", max_pixels=settings.max_pixels)
    client = create_app(settings, predictor=predictor).test_client()
    response = post(client, phone_photo["baseline"])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["predictions"]) == 3


def test_the_pixel_limit_grows_with_the_payload_limit():
    """Asynchronous endpoints take 100 MB bodies: a lossless image that large must fit too."""
    settings = Settings.from_environment({"BYOC_MAX_PAYLOAD_MB": "100"})
    assert settings.max_pixels >= settings.max_payload_bytes == 100 * 2**20
    assert Settings.from_environment({"BYOC_MAX_PAYLOAD_MB": "100", "BYOC_MAX_PIXELS": "9"}
                                     ).max_pixels == 9


def test_other_paths_and_methods_are_json_404_and_405(client):
    assert_error(client.get("/predict"), 404, "/ping", "/invocations")
    assert_error(client.get("/invocations"), 405, "POST /invocations")
    assert_error(client.post("/ping"), 405, "GET /ping")


def test_a_server_fault_is_a_500_without_internals(predictor, settings, images, monkeypatch):
    def broken(batch: np.ndarray):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(predictor.backend, "logits", broken)
    client = create_app(settings, predictor=predictor).test_client()
    response = post(client, images["png"])
    assert_error(response, 500, "endpoint's log")
    assert "secret" not in response.get_data(as_text=True)


def test_unknown_headers_are_ignored(client, images):
    response = post(client, images["png"], **{"X-Amzn-SageMaker-Target-Model": "x",
                                              "X-Amzn-Trace-Id": "Root=1-abc"})
    assert response.status_code == 200


def test_the_model_folder_is_all_the_server_reads(trained_model, tmp_path):
    """serve/ needs only the artifact files: copy them alone and serve from the copy."""
    copy = Path(tmp_path / "model")
    copy.mkdir()
    for path in trained_model.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    client = create_app(Settings(model_dir=copy), predictor=load_predictor(copy)).test_client()
    assert client.get("/ping").status_code == 200


# Batch transform: execution parameters and multi-record (SplitType Line) requests.

def test_execution_parameters_fit_the_server(predictor, trained_model):
    """Two requests per core the workers compute on: one computing, one read and ready; however
    many request threads wait, and however many threads a lone request's network uses."""
    settings = Settings(model_dir=trained_model, workers=2, parallel_requests=3,
                        request_threads=32, intra_op_threads=4, max_payload_bytes=1024 * 1024)
    client = create_app(settings, predictor=predictor).test_client()
    body = client.get("/execution-parameters").get_json()
    assert body == {"MaxConcurrentTransforms": 12, "BatchStrategy": "MULTI_RECORD",
                    "MaxPayloadInMB": 1}


def test_jsonlines_answers_one_line_per_record_in_order(client, images):
    jpeg, png = (base64.b64encode(images[k]).decode() for k in ("jpeg", "png"))
    body = "\n".join([
        jpeg,                                         # a bare base64 line
        json.dumps(png),                              # a JSON string
        json.dumps({"id": "dogs/a.jpg", "image": jpeg}),
        "not base64!",                                # answered with its own error line
        json.dumps({"id": "dogs/b.png", "image": base64.b64encode(b"not an image").decode()}),
        "",
        json.dumps({"id": "c", "image": png}),
    ]) + "\n"
    response = client.post("/invocations", data=body, content_type="application/jsonlines",
                           headers={"Accept": "application/jsonlines"})
    assert response.status_code == 200 and response.mimetype == "application/jsonlines"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert len(lines) == 6
    assert [line.get("id") for line in lines] == [None, None, "dogs/a.jpg", None, "dogs/b.png", "c"]
    assert lines[0]["predictions"] == lines[2]["predictions"]  # the same image twice
    assert lines[1]["predictions"] == lines[5]["predictions"]
    assert "line 4" in lines[3]["error"] and "base64" in lines[3]["error"]
    assert "record 5" in lines[4]["error"] and "not an image" in lines[4]["error"]
    single = client.post("/invocations", data=images["jpeg"], content_type="image/jpeg")
    assert lines[0]["predictions"] == single.get_json()["predictions"]


def test_jsonlines_batches_past_max_batch_images(predictor, trained_model, images):
    settings = Settings(model_dir=trained_model, max_batch_images=2)
    client = create_app(settings, predictor=predictor).test_client()
    line = base64.b64encode(images["png"]).decode()
    response = client.post("/invocations", data="\n".join([line] * 5),
                           content_type="application/jsonlines")
    lines = response.get_data(as_text=True).splitlines()
    assert len(lines) == 5 and all("predictions" in json.loads(x) for x in lines)


def test_an_empty_jsonlines_body_is_a_400(client):
    response = client.post("/invocations", data="\n\n", content_type="application/jsonlines")
    assert response.status_code == 400 and "no records" in response.get_json()["error"]


def test_batch_transforms_payload_limit_is_honoured(monkeypatch):
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}
    assert Settings.from_environment(env).max_payload_bytes == 20 * 2**20
    env["BYOC_MAX_PAYLOAD_MB"] = "2"  # the project's own setting wins
    assert Settings.from_environment(env).max_payload_bytes == 2 * 2**20


def scraped(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_decoding_inference_and_the_model(client, predictor, images):
    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = scraped(client.get("/metrics").get_data(as_text=True))
    assert post(client, images["jpeg"]).status_code == 200
    assert post(client, b"not an image").status_code == 400
    body = {"images": [base64.b64encode(images["png"]).decode()] * 3}
    assert client.post("/invocations", json=body).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    after = scraped(response.get_data(as_text=True))

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": "/invocations", "method": "POST", "status": "200"}
    assert grew("byoc_requests_total", **ok) == 2
    assert grew("byoc_requests_total", **{**ok, "status": "400"}) == 1
    assert grew("byoc_request_seconds_count", route="/invocations") == 3
    assert grew("byoc_decode_seconds_count") == 5  # 1 + 1 refused + 3
    # The batch of three runs the network once.
    assert grew("byoc_inference_seconds_count", precision=predictor.precision) == 2
    assert grew("byoc_batch_images_sum") == 4
    served = [labels for (name, labels), v in after.items() if name == "byoc_model_info" and v]
    # (Other tests' apps share this process's registry; a server process serves one.)
    assert "tiny-shapes" in {dict(labels)["model"] for labels in served}
