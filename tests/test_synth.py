from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recpack.synth import make_image, make_image_folder, photos


def test_bundled_photos_load_as_rgb_arrays() -> None:
    pics = photos()
    assert len(pics) == 5
    for a in pics:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
        assert max(a.shape[:2]) <= 720 and min(a.shape[:2]) >= 256
        assert not a.flags.writeable  # shared cache: callers cannot corrupt it
    assert photos()[0] is pics[0]


def test_make_image_is_deterministic_sized_and_distinct() -> None:
    a = make_image(np.random.default_rng(1), (120, 90))
    b = make_image(np.random.default_rng(1), (120, 90))
    assert a.mode == "RGB" and a.size == (120, 90)
    assert a.tobytes() == b.tobytes()
    rng = np.random.default_rng(2)
    arrays = [np.asarray(make_image(rng, (120, 90)), dtype=np.int16) for _ in range(6)]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert np.abs(arrays[i] - arrays[j]).mean() > 5


def test_make_image_any_size_including_larger_than_noise_field() -> None:
    assert make_image(np.random.default_rng(0), (1100, 60)).size == (1100, 60)
    assert make_image(np.random.default_rng(0), (1, 1)).size == (1, 1)
    with pytest.raises(ValueError, match="positive"):
        make_image(np.random.default_rng(0), (0, 10))


def test_jpeg_sizes_resemble_imagenet() -> None:
    rng = np.random.default_rng(3)
    sizes = []
    for _ in range(6):
        buf = io.BytesIO()
        make_image(rng).save(buf, format="JPEG", quality=95)
        sizes.append(len(buf.getvalue()))
    assert 70_000 < np.mean(sizes) < 150_000


def test_make_image_folder_layout_and_determinism(tmp_path: Path) -> None:
    paths = make_image_folder(tmp_path / "a", 7, classes=3, size=(64, 48), quality=80, seed=5)
    assert [p.relative_to(tmp_path / "a").as_posix() for p in paths] == [
        f"class_{i % 3:03d}/img_{i:06d}.jpg" for i in range(7)]
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
    again = make_image_folder(tmp_path / "b", 4, classes=3, size=(64, 48), quality=80, seed=5)
    # image i depends only on (seed, i): a smaller n gives the same first images
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths[:4]]
    other = make_image_folder(tmp_path / "c", 1, classes=3, size=(64, 48), quality=80, seed=6)
    assert other[0].read_bytes() != paths[0].read_bytes()


def test_make_image_folder_progress_and_bad_arguments(tmp_path: Path) -> None:
    assert len(make_image_folder(tmp_path, 2, size=(32, 24), progress=True)) == 2
    with pytest.raises(ValueError):
        make_image_folder(tmp_path, -1)
    with pytest.raises(ValueError):
        make_image_folder(tmp_path, 1, quality=0)
