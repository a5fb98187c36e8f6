"""Thousands of mutated image bodies through the real server (gunicorn and its workers, as the
container runs them): every answer is a 200 or a 4xx, never a 5xx, and the workers that started
are the ones still serving at the end. Seeded, so a failure replays; bounded in time."""
from __future__ import annotations

import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from PIL import Image

from tests.unit.test_server import start, wait_ready

SEED = 20261201
BODIES = 5000
DEADLINE_S = 300
INTERESTING = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00",
               b"\x80\x00\x00\x00"]


def seeds() -> list[tuple[bytes, str]]:
    """Valid images of every format the server takes, in several modes, with and without
    metadata (EXIF and TIFF tags are where crafted files break decoders): (bytes, type)."""
    pixels = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = 6, "maker", "model"

    def encoded(fmt: str, picture=image, **options) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        return buffer.getvalue()

    with_metadata = [(encoded("JPEG", exif=exif), "image/jpeg"),
                     (encoded("TIFF"), "image/tiff"),
                     (encoded("TIFF", exif=exif, compression="tiff_deflate"), "image/tiff"),
                     (encoded("TIFF", picture=image.convert("CMYK")), "image/tiff")]
    plain = [(encoded("JPEG"), "image/jpeg"), (encoded("JPEG", progressive=True), "image/jpeg"),
             (encoded("JPEG", picture=image.convert("CMYK")), "image/jpeg"),
             (encoded("PNG"), "image/png"), (encoded("PNG", picture=image.convert("P")), "image/png"),
             (encoded("PNG", picture=image.convert("RGBA"), exif=exif), "image/png"),
             (encoded("WEBP", exif=exif), "image/webp"), (encoded("WEBP", lossless=True), "image/webp"),
             (encoded("GIF", save_all=True, append_images=[image.rotate(90)]), "image/gif"),
             (encoded("GIF", picture=image.convert("P"), transparency=0), "image/gif"),
             (encoded("TIFF", compression="tiff_lzw"), "image/tiff"),
             (encoded("BMP"), "application/x-image")]
    return with_metadata * 3 + plain


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-8 edits, mostly in the first 256 bytes (headers, tags): bit flips, boundary bytes and
    integers, truncation, duplicated and deleted runs."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not data:
            break
        pos = rng.randrange(min(len(data), 256) if rng.random() < 0.7 else len(data))
        edit = rng.randrange(6)
        if edit == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif edit == 1:
            data[pos] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01])
        elif edit == 2:
            data[pos:pos + 4] = rng.choice(INTERESTING)
        elif edit == 3:
            del data[pos:]
        elif edit == 4:
            data[pos:pos] = data[pos:pos + rng.randint(1, 64)]
        else:
            del data[pos:pos + rng.randint(1, 64)]
    return bytes(data)


def test_mutated_images_never_get_a_5xx_nor_kill_a_worker(trained_model, tmp_path):
    rng = random.Random(SEED)
    corpus = seeds()
    bodies = [(mutate(body, rng), kind) for body, kind in
              (rng.choice(corpus) for _ in range(BODIES))]
    log_file = open(tmp_path / "server.log", "w+")
    process, url = start(trained_model, output=log_file)  # two sync workers
    local = threading.local()
    deadline = time.monotonic() + DEADLINE_S

    def send(item: tuple[bytes, str]) -> int:
        if time.monotonic() > deadline:
            return -1
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body, kind = item
        return local.session.post(f"{url}/invocations", data=body, timeout=30,
                                  headers={"Content-Type": kind}).status_code

    try:
        wait_ready(process, url, log_file)
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(send, bodies))
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        log = (tmp_path / "server.log").read_text()
    assert -1 not in statuses, f"only {statuses.index(-1)} bodies in {DEADLINE_S} s"
    failures = [(i, s) for i, s in enumerate(statuses) if s >= 500]
    assert not failures, f"{len(failures)} bodies got a 5xx, first {failures[:5]}:\n{log[-3000:]}"
    assert statuses.count(200) > 100 and sum(400 <= s < 500 for s in statuses) > 1000
    assert log.count("Booting worker") == 2, log[-3000:]  # none died and was replaced
