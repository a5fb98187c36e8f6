"""Classify a folder of images with a batch transform job on the custom serving image.

    # on AWS: images under an S3 prefix (or a local folder, uploaded for you)
    python -m scripts.sagemaker_batch_transform --model-data s3://BUCKET/runs/JOB/output/model.tar.gz \
        --images s3://BUCKET/photos --output s3://BUCKET/transform --role ... [--instance-type ml.c5.xlarge]
    # on this machine, in SageMaker local mode
    python -m scripts.sagemaker_batch_transform --local --model-data local_run/sagemaker/model.tar.gz \
        --images demo_data/test --output local_run/transform

The images are packed into JSON-lines files, one {"id": "<file>", "image": "<base64>"} per line,
under <output>/input, one image in memory at a time; the job splits them by line (SplitType Line)
into multi-record requests (BatchStrategy MultiRecord) that the server answers line by line, in
order; the results in <output>/results are joined back to the file names by id into
predictions.csv (and printed). A record must fit MaxPayloadInMB, or SageMaker fails the whole
job: a larger photo is sent downscaled (shorter side 1024 px, far above any model's input) and
noted in the CSV. A file that is not an image gets its error in the CSV instead of failing the job.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from artifact.content_types import JSONLINES_TYPE
from artifact.preprocess import FOLDER_MAX_PIXELS, IMAGE_EXTENSIONS, decode_resized
from scripts import common, platforms
from scripts.sagemaker_model import ModelSource, check_architecture, create_model
from util.progress import track
from util.s3 import list_s3, s3_folder, split_s3_uri

SHRUNK_SHORTER_SIDE = 1024  # a downscaled photo's shorter side: 4x a 256-pixel model input
RECORD_OVERHEAD = 4096  # bytes of a record besides its base64: the JSON, its id, the newline


def list_images(images: str, s3=None) -> list[tuple[str, Callable[[], bytes]]]:
    """(id, read()) for every image file under a folder or S3 prefix, in name order."""
    if images.startswith("s3://"):
        bucket, _ = split_s3_uri(images)
        found = [(name, lambda k=item["Key"]: s3.get_object(Bucket=bucket, Key=k)["Body"].read())
                 for name, item in list_s3(s3, images)
                 if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
        return sorted(found, key=lambda f: f[0])
    root = Path(images)
    if not root.is_dir():
        raise SystemExit(f"{images} is not a folder (or an s3:// prefix) of images")
    return [(str(p.relative_to(root)), p.read_bytes) for p in sorted(root.rglob("*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]


def shrunk(data: bytes, limit: int) -> tuple[bytes, str]:
    """The image as a JPEG small enough for a record of limit bytes, and a note saying so.
    Decoded as the server decodes (EXIF orientation, alpha on white, JPEG draft, a pixel limit),
    so the answer is the one the photo would have had; raises when it is no image."""
    from PIL import Image

    side = SHRUNK_SHORTER_SIDE
    while True:
        pixels = decode_resized(data, side, max_pixels=FOLDER_MAX_PIXELS)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        if len(buffer.getvalue()) * 4 // 3 + RECORD_OVERHEAD <= limit or side <= 64:
            height, width = pixels.shape[:2]
            return buffer.getvalue(), (f"sent as a {width}x{height} JPEG: the file's "
                                       f"{len(data)} bytes are above the payload limit")
        side //= 2


def record(name: str, data: bytes, limit: int) -> tuple[str | None, str]:
    """(the JSON line, a note) for one image, or (None, why) when it cannot be sent."""
    note = ""
    if len(data) * 4 // 3 + RECORD_OVERHEAD > limit:  # base64 grows it by a third
        try:
            data, note = shrunk(data, limit)
        except Exception as e:  # not an image the server could read either
            return None, f"larger than the payload limit and not a readable image ({e})"
    line = json.dumps({"id": name, "image": base64.b64encode(data).decode()})
    return line, note


def pack(images: Iterable[tuple[str, Callable[[], bytes]]], folder: Path, records_per_file: int,
         limit: int) -> dict[str, dict]:
    """Write JSON-lines part files into folder, reading one image at a time; returns
    {id: {"note" or "error": ...}} for the images shrunk or left out."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    notes, out, count = {}, None, 0
    try:
        for name, read in track(images, f"packing images into {folder}", unit="images"):
            line, note = record(name, read(), limit)
            if line is None:
                notes[name] = {"error": note}
                continue
            if note:
                notes[name] = {"note": note}
            if count % records_per_file == 0:
                if out:
                    out.close()
                out = open(folder / f"part-{count // records_per_file:05d}.jsonl", "w")
            out.write(line + "\n")
            out.flush()
            count += 1
    finally:
        if out:
            out.close()
    return notes


def upload(folder: Path, location: str, s3) -> None:
    """Each file of folder to an s3:// folder (from disk: never all in memory)."""
    bucket, key = split_s3_uri(location)
    for path in sorted(folder.iterdir()):
        s3.upload_file(str(path), bucket, s3_folder(key) + path.name)


def read_results(location: str, s3=None) -> list[dict]:
    """Every JSON line of the job's .out files (every page of the listing)."""
    texts = []
    if location.startswith("s3://"):
        bucket, _ = split_s3_uri(location)
        for name, item in sorted(list_s3(s3, location), key=lambda x: x[0]):
            if name.endswith(".out"):
                texts.append(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode())
    else:
        texts = [p.read_text() for p in sorted(Path(location.removeprefix("file://")).glob("*.out"))]
    return [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]


def join(names: list[str], results: list[dict], notes: dict[str, dict]) -> list[dict]:
    """One row per image file: its top prediction, or its error; and pack()'s note."""
    by_id = {r.get("id"): r for r in results}
    rows = []
    for name in names:
        row = {"file": name, "label": "", "probability": "", "error": "",
               "note": notes.get(name, {}).get("note", "")}
        result = by_id.get(name)
        if "error" in notes.get(name, {}):
            row["error"] = notes[name]["error"]
        elif result is None:
            row["error"] = "no result"
        elif "error" in result:
            row["error"] = result["error"]
        else:
            best = result["predictions"][0]
            row.update(label=best["label"], probability=f"{best['probability']:.4f}")
        rows.append(row)
    return rows


def transform_job(name: str, model: str, inputs: str, results: str, instance_type: str,
                  instance_count: int, max_payload_mb: int) -> dict:
    """CreateTransformJob's request: JSON lines split by line into multi-record requests,
    answered line by line into results."""
    return {
        "TransformJobName": name, "ModelName": model, "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": max_payload_mb,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": inputs}},
                           "ContentType": JSONLINES_TYPE, "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": results, "Accept": JSONLINES_TYPE, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }


def run_transform(sagemaker_session, request: dict, local: bool) -> None:
    """Start the job and wait for its end (local mode's engine runs it before it returns)."""
    client = sagemaker_session.sagemaker_client
    client.create_transform_job(**request)
    if local:
        return
    name = request["TransformJobName"]
    while True:
        described = client.describe_transform_job(TransformJobName=name)
        status = described["TransformJobStatus"]
        if status == "Completed":
            return
        if status in ("Failed", "Stopped"):
            raise SystemExit(f"transform job {name} {status.lower()}: "
                             f"{described.get('FailureReason', 'no reason given')} (its log: "
                             f"CloudWatch /aws/sagemaker/TransformJobs)")
        time.sleep(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--model-data", required=True,
                        help="the training job's model.tar.gz (s3://, or a file with --local)")
    parser.add_argument("--images", required=True, help="a folder or s3:// prefix of images")
    parser.add_argument("--output", required=True, help="s3:// prefix (or a folder with --local)")
    parser.add_argument("--instance-type", default="ml.c5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--records-per-file", type=int, default=500)
    parser.add_argument("--max-payload-mb", type=int, default=6,
                        help="largest multi-record request (MaxPayloadInMB)")
    common.add_gpu_argument(parser)
    args = parser.parse_args(argv)
    common.check_s3_uri("--model-data", args.model_data, args.local)
    common.check_s3_uri("--output", args.output, args.local)
    common.check_s3_uri("--images", args.images, local=True)  # a folder is uploaded on AWS too
    target = common.launch(args)

    sagemaker_session = common.session(target)
    source = ModelSource(model_data=args.model_data, gpu=args.gpu)
    instance_type = common.instance_type(target, args.gpu, args.instance_type)
    if not target.local:
        platforms.require_transform_instance(instance_type)
    check_architecture(target, sagemaker_session, source, instance_type)  # before any upload
    s3 = sagemaker_session.boto_session.client("s3") if not target.local else None
    images = list_images(args.images, s3)
    if not images:
        raise SystemExit(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {args.images}")
    output = common.uri(args.output, target.local)
    inputs, results = f"{output.rstrip('/')}/input", f"{output.rstrip('/')}/results"
    limit = args.max_payload_mb * 2**20
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) if s3 else Path(inputs.removeprefix("file://"))
        notes = pack(images, folder, args.records_per_file, limit)
        if s3:
            upload(folder, inputs, s3)
    print(f"{len(images)} images packed into {inputs}")

    model = create_model(target, sagemaker_session, source)
    request = transform_job(f"byoc-transform-{time.strftime('%Y%m%d-%H%M%S')}", model, inputs,
                            results, instance_type, args.instance_count, args.max_payload_mb)
    started = time.perf_counter()
    try:
        run_transform(sagemaker_session, request, target.local)
    finally:
        sagemaker_session.sagemaker_client.delete_model(ModelName=model)
        if target.local:
            common.remove_local_containers(common.serving_image(args.gpu),
                                           image_tag=target.image_tag)
    rows = join([name for name, _ in images], read_results(results, s3), notes)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["file", "label", "probability", "error", "note"])
    writer.writeheader()
    writer.writerows(rows)
    if s3:
        bucket, key = split_s3_uri(output)
        s3.put_object(Bucket=bucket, Key=s3_folder(key) + "predictions.csv",
                      Body=table.getvalue().encode())
    else:
        Path(output.removeprefix("file://"), "predictions.csv").write_text(table.getvalue())
    print(table.getvalue(), end="")
    failed = sum(1 for r in rows if r["error"])
    print(f"{len(rows) - failed} images classified, {failed} failed, in "
          f"{time.perf_counter() - started:.1f} s; predictions.csv in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
