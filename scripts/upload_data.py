"""Upload a data set folder (train/ valid/ [test/], one sub-folder per class) to S3, skipping
files already there with the same size, then check that S3 holds every image of every split.

    python -m scripts.upload_data dog_images s3://BUCKET/dogs [--region eu-west-1]

Prints the S3 prefix to pass to scripts/sagemaker_train.py --data.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from artifact.preprocess import IMAGE_EXTENSIONS
from scripts import common
from util.progress import track
from util.s3 import list_s3, s3_folder, split_s3_uri

SPLITS = ("train", "valid", "test")


def local_files(data: Path) -> dict[str, Path]:
    """S3 key suffix (split/class/file) -> file, for every image of every split."""
    splits = [s for s in SPLITS if (data / s).is_dir()]
    if not {"train", "valid"} <= set(splits):
        raise SystemExit(f"{data} needs train/ and valid/ folders (and optionally test/)")
    return {path.relative_to(data).as_posix(): path for split in splits
            for path in sorted((data / split).glob("*/*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS}


def remote_sizes(s3, uri: str) -> dict[str, int]:
    return {key: item["Size"] for key, item in list_s3(s3, uri)}


def upload(data: Path, uri: str, s3=None, threads: int = 16) -> dict[str, int]:
    """Returns {"uploaded": n, "skipped": n}; raises SystemExit if S3 then lacks a file."""
    s3 = s3 or boto3.client("s3")
    bucket, prefix = split_s3_uri(uri)
    folder = s3_folder(prefix)
    files = local_files(data)
    present = remote_sizes(s3, uri)
    todo = [key for key, path in files.items() if present.get(key) != path.stat().st_size]

    def put(key: str) -> None:
        s3.upload_file(str(files[key]), bucket, folder + key)

    with ThreadPoolExecutor(threads) as pool:
        for _ in track(pool.map(put, todo), f"uploading to {uri}", total=len(todo), unit="files"):
            pass
    after = remote_sizes(s3, uri)
    for split in SPLITS:
        expected = sum(key.startswith(f"{split}/") for key in files)
        found = sum(key.startswith(f"{split}/") and key in files for key in after)
        if found != expected:
            raise SystemExit(f"{uri}/{split}: {found} of {expected} images after the upload; run again")
        if expected:
            print(f"{split}: {expected} images")
    return {"uploaded": len(todo), "skipped": len(files) - len(todo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("uri", help="s3://bucket/prefix")
    parser.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    common.check_s3_uri("the destination", args.uri, local_mode=False)
    counts = upload(args.data, args.uri, common.aws_session(args.region).client("s3"))
    print(f"uploaded {counts['uploaded']}, already there {counts['skipped']}: "
          f"--data {args.uri.rstrip('/')}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
