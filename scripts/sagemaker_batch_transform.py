"""Classify a folder of images with a batch transform job on the custom serving image.

    # on AWS: images under an S3 prefix (or a local folder, uploaded for you)
    python -m scripts.sagemaker_batch_transform --model-data s3://BUCKET/runs/JOB/output/model.tar.gz \
        --images s3://BUCKET/photos --output s3://BUCKET/transform --role ... [--instance-type ml.c5.xlarge]
    # on this machine, in SageMaker local mode
    python -m scripts.sagemaker_batch_transform --local --model-data local_run/sagemaker/model.tar.gz \
        --images demo_data/test --output local_run/transform

The images are packed into JSON-lines files, one {"id": "<file>", "image": "<base64>"} per line,
under <output>/input; the job splits them by line (SplitType Line) into multi-record requests
(BatchStrategy MultiRecord) that the server answers line by line, in order; the results in
<output>/results are joined back to the file names by id into predictions.csv (and printed).
A file that is not an image gets its error in the CSV instead of failing the job.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import sys
import time
from pathlib import Path

from scripts import common
from scripts.sagemaker_deploy import make_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
JSONLINES = "application/jsonlines"


def list_images(images: str, s3=None) -> list[tuple[str, callable]]:
    """(id, read()) for every image file under a folder or S3 prefix, in name order."""
    if images.startswith("s3://"):
        bucket, _, prefix = images[5:].partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if Path(key).suffix.lower() in IMAGE_SUFFIXES:
                    found.append((key[len(prefix):], lambda k=key: s3.get_object(
                        Bucket=bucket, Key=k)["Body"].read()))
        return sorted(found, key=lambda f: f[0])
    root = Path(images)
    if not root.is_dir():
        raise SystemExit(f"{images} is not a folder (or an s3:// prefix) of images")
    return [(str(p.relative_to(root)), p.read_bytes) for p in sorted(root.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def pack(images: list[tuple[str, callable]], records_per_file: int) -> list[tuple[str, bytes]]:
    """JSON-lines files of {"id", "image"} records."""
    files = []
    for start in range(0, len(images), records_per_file):
        lines = [json.dumps({"id": name, "image": base64.b64encode(read()).decode()})
                 for name, read in images[start:start + records_per_file]]
        files.append((f"part-{start // records_per_file:05d}.jsonl",
                      ("\n".join(lines) + "\n").encode()))
    return files


def write(location: str, files: list[tuple[str, bytes]], s3=None) -> None:
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        for name, data in files:
            s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}", Body=data)
        return
    folder = Path(location.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    for name, data in files:
        (folder / name).write_bytes(data)


def read_results(location: str, s3=None) -> list[dict]:
    """Every JSON line of the job's .out files."""
    texts = []
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        for item in sorted(listed.get("Contents", []), key=lambda i: i["Key"]):
            if item["Key"].endswith(".out"):
                texts.append(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode())
    else:
        texts = [p.read_text() for p in sorted(Path(location.removeprefix("file://")).glob("*.out"))]
    return [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]


def join(names: list[str], results: list[dict]) -> list[dict]:
    """One row per image file: its top prediction, or its error."""
    by_id = {r.get("id"): r for r in results}
    rows = []
    for name in names:
        result = by_id.get(name)
        if result is None:
            rows.append({"file": name, "label": "", "probability": "", "error": "no result"})
        elif "error" in result:
            rows.append({"file": name, "label": "", "probability": "", "error": result["error"]})
        else:
            best = result["predictions"][0]
            rows.append({"file": name, "label": best["label"],
                         "probability": f"{best['probability']:.4f}", "error": ""})
    return rows


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
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)

    sagemaker_session = common.session(args)
    s3 = sagemaker_session.boto_session.client("s3") if not args.local else None
    images = list_images(args.images, s3)
    if not images:
        raise SystemExit(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.images}")
    output = common.uri(args.output, args.local)
    inputs, results = f"{output.rstrip('/')}/input", f"{output.rstrip('/')}/results"
    write(inputs, pack(images, args.records_per_file), s3)
    print(f"{len(images)} images packed into {inputs}")

    model = make_model(args, sagemaker_session)
    transformer = model.transformer(
        instance_count=args.instance_count,
        instance_type=("local_gpu" if args.gpu else "local") if args.local else args.instance_type,
        strategy="MultiRecord", assemble_with="Line", accept=JSONLINES, output_path=results,
        max_payload=args.max_payload_mb)
    started = time.perf_counter()
    try:
        transformer.transform(inputs, content_type=JSONLINES, split_type="Line",
                              job_name=f"byoc-transform-{time.strftime('%Y%m%d-%H%M%S')}",
                              wait=True, logs=False)
    finally:
        if args.local:
            common.remove_local_containers("serve-gpu" if args.gpu else "serve",
                                           image_tag=args.image_tag)
    rows = join([name for name, _ in images], read_results(results, s3))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["file", "label", "probability", "error"])
    writer.writeheader()
    writer.writerows(rows)
    write(output, [("predictions.csv", table.getvalue().encode())], s3)
    print(table.getvalue(), end="")
    failed = sum(1 for r in rows if r["error"])
    print(f"{len(rows) - failed} images classified, {failed} failed, in "
          f"{time.perf_counter() - started:.1f} s; predictions.csv in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
