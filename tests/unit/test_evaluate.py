"""train.evaluate as the pipeline's evaluation step runs it: a model folder or model.tar.gz
scored on a test folder with training's own preprocessing and report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from artifact.manifest import read_manifest
from tests.conftest import ROOT
from train.evaluate import EvaluationError, evaluate_model


def test_scores_a_model_tarball_as_training_scored_it(trained_model, small_data_master, tmp_path):
    (tmp_path / "input").mkdir()
    with tarfile.open(tmp_path / "input" / "model.tar.gz", "w:gz") as archive:
        for path in trained_model.iterdir():
            archive.add(path, arcname=path.name)
    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--model", str(tmp_path / "input"),
         "--test", str(small_data_master / "test"), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    trained = read_manifest(trained_model)
    assert report["images"] == 18
    assert report["test_top1"] == pytest.approx(trained.metrics["test_top1"])
    assert report["multiclass_classification_metrics"]["accuracy"]["value"] == pytest.approx(
        report["test_top1"])
    assert report["model"] == {"name": trained.name, "version": trained.version}
    assert (tmp_path / "out" / "confusion_matrix.png").is_file()


def test_another_data_sets_classes_fail_naming_both(trained_model, small_data, tmp_path):
    os.rename(small_data / "test" / "001.Red_disc", small_data / "test" / "001.Affenpinscher")
    with pytest.raises(EvaluationError, match=r"knows 6 classes \(001.Red_disc, 002.Green_square, "
                                              r"003.Blue_triangle, ...\), but the test folder .* "
                                              r"has 6 \(001.Affenpinscher, 002.Green_square"):
        evaluate_model(trained_model, small_data / "test", tmp_path / "out")
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate_model(tmp_path / "nothing", small_data / "test", tmp_path / "out")


@pytest.mark.parametrize("python_has_the_data_filter", [True, False])
def test_a_tarball_reaching_outside_its_folder_is_refused(tmp_path, monkeypatch,
                                                          python_has_the_data_filter):
    """Debian 12's Python (3.11.2, the stand-in base) has no extraction filter: the same refusal."""
    import io

    from artifact.manifest import ArtifactError, unpacked

    if not python_has_the_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    bad = tmp_path / "model.tar.gz"
    with tarfile.open(bad, "w:gz") as archive:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ArtifactError, match="escaped.txt|not a model.tar.gz"):
        unpacked(bad, tmp_path / "work")
    assert not (tmp_path / "escaped.txt").exists()
