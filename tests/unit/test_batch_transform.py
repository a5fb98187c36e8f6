"""scripts/sagemaker_batch_transform.py's own work: packing records that fit the payload limit
(one image in memory at a time), and reading every result back."""
from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
from PIL import Image

from scripts import sagemaker_batch_transform as batch
from serve.app import create_app
from serve.predictor import load_predictor
from serve.settings import Settings

MB = 2**20


def test_a_photo_above_the_payload_limit_is_sent_downscaled_and_classifies(
        phone_photo, small_data_master, trained_model, tmp_path):
    """SageMaker fails a whole job on one record above MaxPayloadInMB: a 3.4 MB photo with a
    1 MB limit goes as a smaller JPEG, and the server (told the same limit) answers it."""
    small = sorted((small_data_master / "test").glob("*/*.jpg"))[0]
    images = [("phone.jpg", lambda: phone_photo["baseline"]), ("small.jpg", small.read_bytes)]
    notes = batch.pack(images, tmp_path / "input", 10, 1 * MB)
    assert list(notes) == ["phone.jpg"] and "above the payload limit" in notes["phone.jpg"]["note"]
    [part] = (tmp_path / "input").glob("*.jsonl")
    lines = part.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["phone.jpg", "small.jpg"]
    assert all(len(line) + 1 <= 1 * MB for line in lines)
    sent = Image.open(io.BytesIO(base64.b64decode(json.loads(lines[0])["image"])))
    assert min(sent.size) == batch.SHRUNK_SHORTER_SIDE and sent.format == "JPEG"
    assert json.loads(lines[1])["image"] == base64.b64encode(small.read_bytes()).decode()

    settings = Settings.from_environment({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"})
    client = create_app(settings, predictor=load_predictor(trained_model, "onnx")).test_client()
    answer = client.post("/invocations", data=part.read_bytes(),
                         content_type="application/jsonlines")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    results = [json.loads(line) for line in answer.get_data(as_text=True).splitlines()]
    rows = batch.join(["phone.jpg", "small.jpg"], results, notes)
    assert all(r["label"] and not r["error"] for r in rows)
    assert rows[0]["note"] == notes["phone.jpg"]["note"] and rows[1]["note"] == ""


def test_an_oversized_file_that_is_no_image_gets_its_error_and_is_not_sent(tmp_path):
    noise = os.urandom(2 * MB)
    notes = batch.pack([("noise.jpg", lambda: noise)], tmp_path / "input", 10, 1 * MB)
    assert "not a readable image" in notes["noise.jpg"]["error"]
    assert list((tmp_path / "input").glob("*.jsonl")) == []
    [row] = batch.join(["noise.jpg"], [], notes)
    assert row["error"] == notes["noise.jpg"]["error"] and row["label"] == ""


def test_packing_holds_one_image_at_a_time(tmp_path):
    """Each image is on disk before the next is read."""
    folder = tmp_path / "input"
    encoded = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(encoded, "PNG")

    def reader(index: int):
        def read() -> bytes:
            written = sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl"))
            assert written == index, f"image {index} read with {written} records on disk"
            return encoded.getvalue()
        return read

    batch.pack([(f"{i}.png", reader(i)) for i in range(7)], folder, 3, 1 * MB)
    assert sorted(p.name for p in folder.glob("*.jsonl")) == [
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]


def test_every_page_of_results_and_images_is_read(aws):
    """S3 lists 1,000 keys a page; a job over more photos writes more .out files than that."""
    s3 = aws.client("s3")
    for i in range(1003):
        s3.put_object(Bucket="data", Key=f"transform/results/part-{i:05d}.jsonl.out",
                      Body=json.dumps({"id": f"{i}.jpg", "predictions": []}).encode())
    s3.put_object(Bucket="data", Key="transform/results-2/other.out", Body=b'{"id": "x"}')
    results = batch.read_results("s3://data/transform/results", s3)
    assert sorted(r["id"] for r in results) == sorted(f"{i}.jpg" for i in range(1003))
    listed = batch.list_images("s3://data/dogs", s3)
    assert [name for name, _ in listed] == ["train/001.Affenpinscher/a.jpg",
                                            "valid/001.Affenpinscher/a.jpg"]
    assert listed[0][1]() == b"jpeg"
