"""SageMaker data capture's files, read back: one JSON object per line,

    {"captureData": {"endpointInput": {"observedContentType": "image/jpeg", "mode": "INPUT",
                                       "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "{...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2026-12-01T10:00:00Z"},
     "eventVersion": "0"}

under <prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl, in a folder or on S3. A record that
cannot be read is counted with its reason and skipped; it never stops the monitor.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from artifact.content_types import IMAGE_TYPES, JSON_TYPE, JSONLINES_TYPE


class CaptureError(ValueError):
    """The capture source itself is unusable (missing, or holds no capture file)."""


@dataclass
class Request:
    images: list[bytes]
    answers: list[tuple[int, float] | None]  # the endpoint's top-1 (class index, probability)
    model: dict | None  # {"name", "version", ...} as the endpoint answered it
    time: str | None


@dataclass
class Skipped:
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> where it was first seen

    def add(self, reason: str, where: str) -> None:
        self.reasons[reason] += 1
        self.examples.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


HOUR_FOLDER = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]*$")


def in_window(name: str, since: str | None, until: str | None) -> bool:
    """Whether a capture file's hour folder (.../yyyy/mm/dd/hh/file) can hold records of
    [since, until): files of other hours are neither downloaded nor read. A name
    without an hour folder may hold any time."""
    match = HOUR_FOLDER.search(name)
    if not match:
        return True
    year, month, day, hour = match.groups()
    start = f"{year}-{month}-{day}T{hour}:00:00Z"
    end = f"{year}-{month}-{day}T{hour}:59:59.999999Z"
    return (not until or start < until) and (not since or end >= since)


def capture_files(source: str, s3=None, since: str | None = None,
                  until: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, text) of every .jsonl file under a folder or an s3:// prefix whose hour folder
    lies in [since, until), in name order (the hour folders sort in time order)."""
    if source.startswith("s3://"):
        from util.s3 import list_s3, s3_folder, split_s3_uri

        bucket, key = split_s3_uri(source)
        names = sorted(name for name, _ in list_s3(s3, source) if name.endswith(".jsonl"))
        if not names:
            raise CaptureError(f"no .jsonl capture file under {source}")
        names = [name for name in names if in_window(name, since, until)]
        for name in names:
            body = s3.get_object(Bucket=bucket, Key=s3_folder(key) + name)["Body"].read()
            yield f"{source.rstrip('/')}/{name}", body.decode("utf-8", "replace")
        return
    root = Path(source)
    if not root.exists():
        raise CaptureError(f"{source} does not exist: give the capture folder or s3:// prefix "
                           "(<prefix>/<endpoint>/<variant>/...)")
    files = sorted(root.rglob("*.jsonl")) if root.is_dir() else [root]
    if not files:
        raise CaptureError(f"no .jsonl capture file under {source}")
    for path in files:
        if root.is_dir() and not in_window(path.relative_to(root).as_posix(), since, until):
            continue
        yield str(path), path.read_text(encoding="utf-8", errors="replace")


def _body(part: dict) -> bytes:
    data = part.get("data", "")
    if part.get("encoding", "").upper() == "BASE64":
        return base64.b64decode(data, validate=True)
    return data.encode("utf-8")


def _top1(answer: dict) -> tuple[int, float] | None:
    predictions = answer.get("predictions") or []
    if not predictions:
        return None
    best = predictions[0]
    return int(best["index"]), float(best["probability"])


def parse(record: dict) -> Request:
    """One capture record as the images it sent and the answers it got; ValueError (with the
    reason) when it is not a request this server answers."""
    data = record.get("captureData")
    if not isinstance(data, dict) or "endpointInput" not in data:
        raise ValueError("not a capture record (no captureData.endpointInput)")
    request, response = data["endpointInput"], data.get("endpointOutput")
    kind = request.get("observedContentType", "").split(";")[0].strip().lower()
    body = _body(request)
    if kind in IMAGE_TYPES:
        images = [body]
    elif kind == JSON_TYPE:
        images = [base64.b64decode(item) for item in json.loads(body)["images"]]
    elif kind == JSONLINES_TYPE:
        images = [base64.b64decode(json.loads(line)["image"]) for line in body.splitlines()
                  if line.strip()]
    else:
        raise ValueError(f"request content type {kind or 'missing'} is not one the server takes")
    answers: list[tuple[int, float] | None] = [None] * len(images)
    model = None
    if response is not None:  # {"model", "predictions"}, {"model", "results"}, or lines
        text = _body(response).decode("utf-8")
        if kind == JSONLINES_TYPE:
            results = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            answer = json.loads(text)
            model = answer.get("model")
            results = answer["results"] if kind == JSON_TYPE else [answer]
        if len(results) == len(images):
            answers = [_top1(result) for result in results]
    return Request(images, answers, model, record.get("eventMetadata", {}).get("inferenceTime"))


def read(source: str, skipped: Skipped, s3=None, since: str | None = None,
         until: str | None = None) -> Iterator[Request]:
    """Every readable request in the capture, within [since, until) when given (ISO times)."""
    for name, text in capture_files(source, s3, since, until):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{name}:{number}"
            try:
                request = parse(json.loads(line))
            except binascii.Error:
                skipped.add("a body is not valid base64", where)
                continue
            except json.JSONDecodeError:
                skipped.add("unreadable record (not JSON)", where)
                continue
            except ValueError as e:  # parse()'s own reasons
                skipped.add(str(e), where)
                continue
            except (KeyError, TypeError, AttributeError) as e:
                skipped.add(f"unreadable record ({type(e).__name__}: {e})", where)
                continue
            if request.time and ((since and request.time < since) or
                                 (until and request.time >= until)):
                continue
            yield request


def record(request: bytes, content_type: str, response: bytes, response_type: str, time: str,
           event_id: str, json_types: tuple[str, ...] = (JSON_TYPE,)) -> dict:
    """One exchange in data capture's format: JSON bodies as text (the endpoint's capture
    declares application/json as JSON), every other body base64."""
    def part(body: bytes, kind: str, mode: str) -> dict:
        if kind in json_types:
            return {"observedContentType": kind, "mode": mode, "data": body.decode("utf-8"),
                    "encoding": "JSON"}
        return {"observedContentType": kind, "mode": mode,
                "data": base64.b64encode(body).decode("ascii"), "encoding": "BASE64"}

    return {"captureData": {"endpointInput": part(request, content_type, "INPUT"),
                            "endpointOutput": part(response, response_type, "OUTPUT")},
            "eventMetadata": {"eventId": event_id, "inferenceTime": time},
            "eventVersion": "0"}
