"""S3 locations as the kit writes them: s3://bucket/key URIs, key prefixes as folders, and
listings of a folder across every page."""
from __future__ import annotations

from collections.abc import Iterator


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key"); ValueError for anything else."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def s3_folder(key: str) -> str:
    """A key prefix as a folder, "a/b" -> "a/b/" ("" stays ""): S3 prefixes match by text, and
    "runs/job-1" would also match "runs/job-10"."""
    key = key.strip("/")
    return f"{key}/" if key else ""


def list_s3(s3, uri: str) -> Iterator[tuple[str, dict]]:
    """(key below the folder, object) for every object under an s3:// folder, all pages."""
    bucket, key = split_s3_uri(uri)
    folder = s3_folder(key)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        for item in page.get("Contents", []):
            yield item["Key"][len(folder):], item
