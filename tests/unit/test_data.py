"""train.data: scanning, split checks, the decode cache and the sampler."""
import pytest

from train.data import DecodeCache, ShardedSampler, load_splits, prepare, scan_split
from train.environment import DataError


def test_non_image_files_are_skipped_and_listed(small_data):
    (small_data / "train" / "001.Red_disc" / "notes.txt").write_text("hello")
    split = scan_split("train", small_data / "train")
    assert len(split.classes) == 6
    assert [s["reason"] for s in split.skipped] == ["not an image file (by extension)"]
    assert not any(p.suffix == ".txt" for p, _ in split.samples)


def test_corrupt_and_truncated_images_are_skipped_and_listed(small_data, tmp_path):
    folder = small_data / "train" / "002.Green_square"
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "garbage.jpg").write_bytes(b"\x00" * 1000)
    splits = load_splits(small_data / "train", small_data / "valid", None)
    before = len(splits["train"].samples)
    report = prepare(splits, DecodeCache(tmp_path / "cache", 40, "bilinear"), workers=2)
    skipped = {s["file"].rsplit("/", 1)[1]: s["reason"] for s in report["train"]["skipped"]}
    assert set(skipped) == {"truncated.jpg", "garbage.jpg"}
    assert "truncated" in skipped["truncated.jpg"]
    assert report["train"]["images"] == before - 2 == len(splits["train"].samples)


def test_second_prepare_reads_the_cache(small_data, tmp_path):
    cache = DecodeCache(tmp_path / "cache", 40, "bilinear")
    prepare(load_splits(small_data / "train", small_data / "valid", None), cache, workers=1)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    prepare(load_splits(small_data / "train", small_data / "valid", None), cache, workers=1)
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "cache").rglob("*.npy"))] == stamps
    assert len(files) == 6 * (8 + 3)


def test_mismatched_class_folders_are_reported(small_data):
    (small_data / "valid" / "006.Cyan_stripes").rename(small_data / "valid" / "006.Cyan_stripez")
    with pytest.raises(DataError, match=r"lacks \['006.Cyan_stripes'\].*extra \['006.Cyan_stripez'\]"):
        load_splits(small_data / "train", small_data / "valid", None)


def test_one_class_is_refused(small_data):
    for folder in list((small_data / "train").iterdir())[1:]:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    with pytest.raises(DataError, match="at least two"):
        load_splits(small_data / "train", small_data / "valid", None)


def test_empty_split_is_refused(small_data):
    for f in (small_data / "valid").glob("*/*"):
        f.unlink()
    with pytest.raises(DataError, match="valid channel .* holds no image files"):
        load_splits(small_data / "train", small_data / "valid", None)


def test_sampler_is_deterministic_sharded_and_resumable():
    def order(rank, epoch, start=0):
        sampler = ShardedSampler(10, rank, 2, shuffle=True, seed=1, equal_shards=True)
        sampler.set_epoch(epoch, start)
        return list(sampler)

    assert order(0, 0) == order(0, 0) and order(0, 0) != order(0, 1)
    assert len(order(0, 0)) == len(order(1, 0)) == 5
    assert not set(order(0, 0)) & set(order(1, 0))
    assert order(0, 0, start=3) == order(0, 0)[3:]
    uneven = ShardedSampler(11, 1, 2, shuffle=False, seed=0, equal_shards=False)
    assert list(uneven) == [1, 3, 5, 7, 9]
