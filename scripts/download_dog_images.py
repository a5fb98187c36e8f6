"""Download, verify and unpack the dog-breed data set (133 breeds; train/ valid/ test/ of JPEGs).

    python -m scripts.download_dog_images data/            # -> data/dogImages/{train,valid,test}

Needs internet access. The download resumes if interrupted; the archive is checked against
--sha256 when given, and the unpacked tree always against the published layout (133 class
folders in every split, 8,351 images in all).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
import zipfile
from pathlib import Path

from util.progress import Progress

URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
EXPECTED = {"classes": 133, "train": 6680, "valid": 835, "test": 836}


def download(url: str, target: Path) -> Path:
    """Resumable download to target (an interrupted .part file is continued)."""
    part = target.with_suffix(target.suffix + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        total = offset + int(response.headers.get("Content-Length", 0))
        with open(part, "ab" if offset else "wb") as f, Progress(
                f"downloading {target.name}", total or None, "MB", scale=1e-6) as progress:
            progress.update(offset)
            while chunk := response.read(1 << 20):
                f.write(chunk)
                progress.update(len(chunk))
    part.rename(target)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tree(root: Path) -> list[str]:
    """Differences between the unpacked tree and the published layout (empty when it matches)."""
    problems = []
    for split in ("train", "valid", "test"):
        folder = root / split
        if not folder.is_dir():
            problems.append(f"{folder} is missing")
            continue
        classes = [p for p in folder.iterdir() if p.is_dir()]
        images = sum(1 for p in folder.rglob("*.jpg"))
        if len(classes) != EXPECTED["classes"]:
            problems.append(f"{split}: {len(classes)} class folders, expected {EXPECTED['classes']}")
        if images != EXPECTED[split]:
            problems.append(f"{split}: {images} images, expected {EXPECTED[split]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--sha256", help="expected SHA-256 of the archive")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    archive = args.out_dir / "dogImages.zip"
    if not archive.exists():
        try:
            download(args.url, archive)
        except OSError as e:
            print(f"download of {args.url} failed: {e}. Check internet access, or download the "
                  f"archive elsewhere and put it at {archive}.", file=sys.stderr)
            return 1
    if args.sha256 and sha256(archive) != args.sha256.lower():
        print(f"{archive} does not match --sha256: delete it and download again", file=sys.stderr)
        return 1
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(args.out_dir)
    except zipfile.BadZipFile:
        print(f"{archive} is not a valid zip (truncated?): delete it and retry", file=sys.stderr)
        return 1
    root = args.out_dir / "dogImages"
    problems = verify_tree(root)
    if problems:
        print("the unpacked data set differs from the published one:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    print(f"dog-breed data set ready in {root}: train with --data-dir {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
