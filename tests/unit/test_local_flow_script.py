"""scripts/run_local_flow.sh before its builds: it picks the test images it will classify, and
fails in seconds, with a clear line, where it has none. Docker here is a stand-in that records
what it is asked and reports no daemon, so the flow stops at its first build step; the whole
flow runs in tests/container/test_local_flow.py."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.fixture
def no_docker(tmp_path) -> tuple[dict, object]:
    """An environment whose `docker` records its arguments and fails as with no daemon."""
    bin_dir, asked = tmp_path / "bin", tmp_path / "docker-asked"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$*" >> {asked}\nexit 1\n')
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, asked


def flow(data, work, env) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / "run_local_flow.sh"), "--data", str(data),
                           "--work", str(work)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_large_test_set_gives_its_first_jpeg_and_png(no_docker, tmp_path):
    """More file names than a pipe holds (64 KiB): a reader that stops at the first line would
    end the sort with SIGPIPE, and the flow with it (exit 141, the CI failure of 2026-12-07)."""
    env, asked = no_docker
    data = tmp_path / "photos"
    (data / "train").mkdir(parents=True)
    for kind in ("b.Dogs", "a.Cats"):
        folder = data / "test" / kind
        folder.mkdir(parents=True)
        for i in range(600):
            for suffix in (".JPG", ".png", ".txt"):
                (folder / f"{i:04d}-a-long-file-name-as-cameras-and-phones-write-them{suffix}"
                 ).touch()
    result = flow(data, tmp_path / "work", env)
    assert result.returncode == 1, result.stdout + result.stderr
    first = "0000-a-long-file-name-as-cameras-and-phones-write-them"
    assert (f"it will classify: {data}/test/a.Cats/{first}.JPG {data}/test/a.Cats/{first}.png"
            in result.stdout.splitlines())
    assert "cannot reach the Docker daemon" in result.stderr  # the builds come next
    assert asked.read_text().splitlines() == ["info"]


@pytest.mark.parametrize("files, says", [
    (None, "has no test/ folder: the flow classifies two of its images"),
    (["notes.txt", "photo.heic"], "/test has no JPEG or PNG to classify"),
])
def test_a_test_set_with_nothing_to_classify_fails_before_any_build(no_docker, tmp_path, files,
                                                                   says):
    env, asked = no_docker
    data = tmp_path / "photos"
    (data / "train").mkdir(parents=True)
    for name in files or []:
        (data / "test" / "a.Cats").mkdir(parents=True, exist_ok=True)
        (data / "test" / "a.Cats" / name).touch()
    result = flow(data, tmp_path / "work", env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"run_local_flow.sh: {data}{says}"
                                                  if says.startswith("/") else
                                                  f"run_local_flow.sh: {data} {says}"]
    assert not asked.exists()  # no build was tried
