"""S3 locations as the kit writes them: s3://bucket/key URIs, key prefixes as folders, and
listings of a folder across every page."""
from __future__ import annotations

import contextlib
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


class S3AccessError(RuntimeError):
    """A location's bucket does not exist, or refuses the caller: its message is one line that
    names the location and what to check."""


@contextlib.contextmanager
def access(uri: str, needs: str = "s3:ListBucket"):
    """S3's NoSuchBucket and AccessDenied for a request about uri, as S3AccessError (a typo in
    the bucket's name, a bucket of another account); needs: the permission the request takes."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        bucket, _ = split_s3_uri(uri)
        if code == "NoSuchBucket":
            raise S3AccessError(f"{uri}: there is no bucket {bucket} (NoSuchBucket): check its "
                                "name in the s3:// URI (`aws s3 ls` lists your buckets)") from None
        if code in ("AccessDenied", "AllAccessDisabled"):
            raise S3AccessError(f"{uri}: S3 refused {e.operation_name} on bucket {bucket} "
                                f"({code}): the credentials you launch with need {needs} on "
                                "it, and a bucket of another account must allow them in its "
                                "bucket policy") from None
        raise


def list_s3(s3, uri: str) -> Iterator[tuple[str, dict]]:
    """(key below the folder, object) for every object under an s3:// folder, all pages."""
    bucket, key = split_s3_uri(uri)
    folder = s3_folder(key)
    with access(uri):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            for item in page.get("Contents", []):
                yield item["Key"][len(folder):], item


def list_folders(s3, uri: str) -> set[str]:
    """The names of the folders directly under an s3:// folder."""
    bucket, key = split_s3_uri(uri)
    folder = s3_folder(key)
    with access(uri):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder, Delimiter="/")
    return {p["Prefix"][len(folder):].rstrip("/") for p in listed.get("CommonPrefixes", [])}
