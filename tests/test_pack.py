"""The packer end to end: exact round trip, shuffling, sharding, determinism, resume, bad inputs, LMDB."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import recpack
from recpack.errors import PackError
from recpack.imaging import ImageOptions
from recpack.pack import PackOptions, pack, plan_shards, shuffle_order
from recpack.packing import workers as pack_workers
from recpack.shard import ShardWriter
from recpack.synth import make_image_folder

QUIET = dict(progress=False, fsync=False)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def originals(src: Path) -> dict[str, tuple[bytes, int]]:
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    return {f"{c}/{f.name}": (f.read_bytes(), classes.index(c)) for c in classes for f in (src / c).iterdir()}


def test_round_trip_exact_bytes_and_labels(tiny_jpegs: Path, tmp_path: Path) -> None:
    res = pack(tiny_jpegs, tmp_path / "ds", PackOptions(num_shards=3, workers=0, **QUIET))
    want = originals(tiny_jpegs)
    assert res.records == len(want) and not res.skipped
    with recpack.open(tmp_path / "ds") as ds:
        assert len(ds) == len(want)
        assert ds.classes == sorted(p.name for p in tiny_jpegs.iterdir() if p.is_dir())
        got = {r.key: (r.data, r.label) for r in ds}
        assert got == want
        for i in range(len(ds)):  # random access agrees with iteration
            r = ds[i]
            assert (r.data, r.label) == want[r.key]
            with Image.open(tiny_jpegs / r.key) as im:
                assert r.meta["size"] == list(im.size)
        assert ds[-1].key == ds[len(ds) - 1].key
        with pytest.raises(IndexError):
            ds[len(ds)]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 30), sizes=st.lists(st.integers(8, 64), min_size=1, max_size=4), shards=st.integers(1, 5))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, n: int, sizes: list[int],
                             shards: int) -> None:
    base = tmp_path_factory.mktemp("prop")
    src = base / "src"
    for i in range(n):
        d = src / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        s = sizes[i % len(sizes)]
        Image.new("RGB", (s, s + i), (i * 7 % 256, 40, 90)).save(d / f"{i}.jpg", quality=90)
    pack(src, base / "ds", PackOptions(num_shards=shards, workers=0, **QUIET))
    with recpack.open(base / "ds") as ds:
        assert {r.key: (r.data, r.label) for r in ds} == originals(src)


def test_global_shuffle_mixes_classes_and_follows_seed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image_folder(src, 120, classes=4, size=(32, 24), seed=1)
    pack(src, tmp_path / "a", PackOptions(num_shards=4, workers=0, seed=0, **QUIET))
    pack(src, tmp_path / "b", PackOptions(num_shards=4, workers=0, seed=1, **QUIET))
    with recpack.open(tmp_path / "a") as a, recpack.open(tmp_path / "b") as b:
        keys_a, keys_b = [r.key for r in a], [r.key for r in b]
        assert sorted(keys_a) == sorted(keys_b) and keys_a != keys_b
        for s in range(4):  # every shard holds several classes
            lo, hi = a.manifest.starts()[s], a.manifest.starts()[s + 1]
            assert len(set(a.labels[lo:hi].tolist())) >= 3


def test_shuffle_order_is_a_stable_permutation() -> None:
    keys = [f"k{i}" for i in range(1000)]
    p = shuffle_order(keys, 3)
    assert sorted(p.tolist()) == list(range(1000))
    assert (p == shuffle_order(keys, 3)).all() and not (p == shuffle_order(keys, 4)).all()
    rev = shuffle_order(keys[::-1], 3)  # order depends on keys, not on input order
    assert [keys[::-1][i] for i in rev] == [keys[i] for i in p]


def test_plan_shards_by_bytes_and_count() -> None:
    import numpy as np

    sizes = np.full(10, 100)
    parts = plan_shards(sizes, 250, None)
    assert [len(p) for p in parts] == [3, 2, 3, 2]
    assert np.concatenate(parts).tolist() == list(range(10))
    assert [len(p) for p in plan_shards(sizes, 250, 3)] == [4, 3, 3]
    assert [len(p) for p in plan_shards(sizes[:2], 250, 5)] == [1, 1]


def test_shard_size_option(tiny_jpegs: Path, tmp_path: Path) -> None:
    total = sum(len(b) for b, _ in originals(tiny_jpegs).values())
    res = pack(tiny_jpegs, tmp_path / "ds", PackOptions(shard_size=total // 4, workers=0, **QUIET))
    assert 4 <= len(res.shards) <= 6
    biggest = max(len(b) for b, _ in originals(tiny_jpegs).values())
    assert all(s.bytes <= total // 4 + biggest + 3 * 4096 + 200 * s.records for s in res.shards)


def test_byte_identical_for_any_worker_count(tiny_jpegs: Path, tmp_path: Path) -> None:
    pack(tiny_jpegs, tmp_path / "w0", PackOptions(num_shards=2, workers=0, **QUIET))
    pack(tiny_jpegs, tmp_path / "w3", PackOptions(num_shards=2, workers=3, **QUIET))
    a, b = files_of(tmp_path / "w0"), files_of(tmp_path / "w3")
    assert a.keys() == b.keys() and a == b


def test_rerun_is_a_no_op_and_conflicts_are_refused(tiny_jpegs: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    pack(tiny_jpegs, out, PackOptions(num_shards=2, workers=0, **QUIET))
    before = files_of(out)
    again = pack(tiny_jpegs, out, PackOptions(num_shards=2, workers=0, **QUIET))
    assert again.already_done and files_of(out) == before
    with pytest.raises(PackError, match="--overwrite"):
        pack(tiny_jpegs, out, PackOptions(num_shards=2, workers=0, seed=9, **QUIET))
    res = pack(tiny_jpegs, out, PackOptions(num_shards=2, workers=0, seed=9, overwrite=True, **QUIET))
    assert res.records == len(before) * 0 + res.records and files_of(out) != before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PackError, match="not empty"):
        pack(tiny_jpegs, other, PackOptions(workers=0, **QUIET))
    assert (other / "notes.txt").read_text() == "mine"


def test_resume_after_interruption_keeps_finished_shards(tiny_jpegs: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    opts = PackOptions(num_shards=4, workers=0, **QUIET)
    pack(tiny_jpegs, tmp_path / "ref", opts)
    out = tmp_path / "ds"
    real_finish = ShardWriter.finish
    calls = {"n": 0}

    def finish_then_die(self: ShardWriter, fsync: bool = True) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_finish(self, fsync)

    monkeypatch.setattr(ShardWriter, "finish", finish_then_die)
    with pytest.raises(KeyboardInterrupt):
        pack(tiny_jpegs, out, opts)
    monkeypatch.setattr(ShardWriter, "finish", real_finish)
    names = sorted(os.listdir(out))
    assert "index.json" not in names and not any(n.endswith(".tmp") for n in names)
    assert names.count("shard-00000.rpk") == 1 and "shard-00002.rpk" not in names
    with pytest.raises(recpack.ManifestError, match="resume"):
        recpack.open(out)
    res = pack(tiny_jpegs, out, opts)
    assert res.resumed == 2
    assert files_of(out) == files_of(tmp_path / "ref")


def test_full_disk_is_a_clear_error_and_resumable(tiny_jpegs: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    opts = PackOptions(num_shards=3, workers=0, **QUIET)
    out = tmp_path / "ds"
    real_add = ShardWriter.add
    count = {"n": 0}

    def add_until_full(self: ShardWriter, record: bytes, row):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, record, row)

    monkeypatch.setattr(ShardWriter, "add", add_until_full)
    with pytest.raises(PackError, match="No space left on device.*re-run the same command"):
        pack(tiny_jpegs, out, opts)
    monkeypatch.setattr(ShardWriter, "add", real_add)
    names = os.listdir(out)
    assert "shard-00000.rpk" in names and not any(n.endswith(".tmp") for n in names)
    assert "index.json" not in names
    res = pack(tiny_jpegs, out, opts)
    assert res.resumed == 1
    pack(tiny_jpegs, tmp_path / "ref", opts)
    assert files_of(out) == files_of(tmp_path / "ref")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_resume_after_kill_9(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image_folder(src, 400, classes=4, size=(64, 48), seed=2)
    args = [str(src), "--num-shards", "40", "--workers", "0", "--check", "decode", "--no-progress"]
    subprocess.run([sys.executable, "-m", "recpack", "pack", *args[:1], str(tmp_path / "ref"), *args[1:]],
                   check=True, capture_output=True)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "recpack", "pack", args[0], str(out), *args[1:]]
    for attempt in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = list((out / ".recpack-pack").glob("shard-*.json")) if out.exists() else []
            if len(done) >= 2 + attempt:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait()
        if not (out / "index.json").exists():
            break
    assert not (out / "index.json").exists(), "pack finished before it could be killed"
    with pytest.raises(recpack.ManifestError):
        recpack.open(out)
    r = subprocess.run(cmd + ["--json"], check=True, capture_output=True, text=True)
    assert '"resumed_shards": 0' not in r.stdout
    assert files_of(out) == files_of(tmp_path / "ref")


def test_bad_inputs_are_skipped_and_reported(bad_inputs: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, expected = bad_inputs
    res = pack(folder, tmp_path / "ds", PackOptions(workers=0, **QUIET))
    got = {s.key: s.reason for s in res.skipped}
    assert got.keys() == expected.keys()
    for key, prefix in expected.items():
        assert got[key].startswith(prefix), (key, got[key])
    report = (tmp_path / "ds" / "pack-report.tsv").read_text().splitlines()
    assert report[0] == "key\treason\tpath" and len(report) == 1 + len(expected)
    with recpack.open(tmp_path / "ds") as ds:
        assert len(ds) == res.records > 0
        assert ds.manifest.pack["skipped"] == len(expected)
    with pytest.raises(PackError, match="--strict"):
        pack(folder, tmp_path / "strict", PackOptions(workers=0, strict=True, **QUIET))


def test_non_jpeg_inputs_converted_or_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(src / "rgba.png")
    Image.new("RGB", (40, 30), (0, 255, 0)).save(src / "x.bmp")
    Image.new("RGB", (40, 30), (0, 0, 255)).save(src / "y.jpg")
    res = pack(tmp_path / "src", tmp_path / "ds", PackOptions(workers=0, **QUIET))
    assert res.records == 3
    with recpack.open(tmp_path / "ds") as ds:
        for r in ds:
            assert r.data[:2] == b"\xff\xd8"
            assert Image.open(__import__("io").BytesIO(r.data)).mode == "RGB"
    res = pack(tmp_path / "src", tmp_path / "rej",
               PackOptions(workers=0, image=ImageOptions(convert="reject"), **QUIET))
    assert res.records == 1 and len(res.skipped) == 2


def test_resize_reencodes_shorter_side(tiny_jpegs: Path, tmp_path: Path) -> None:
    pack(tiny_jpegs, tmp_path / "ds", PackOptions(workers=0, image=ImageOptions(resize=40, quality=80), **QUIET))
    with recpack.open(tmp_path / "ds") as ds:
        for r in ds:
            w, h = Image.open(__import__("io").BytesIO(r.data)).size
            assert min(w, h) == 40 and r.meta["size"] == [w, h]
        assert (ds.table()["width"] > 0).all()


def test_list_and_lst_sources(tiny_jpegs: Path, tmp_path: Path) -> None:
    files = sorted(p.relative_to(tiny_jpegs).as_posix() for p in tiny_jpegs.rglob("*.jpg"))
    lst = tiny_jpegs / "train.lst"
    lst.write_text("".join(f"{i}\t{i % 2}.000000\t{i % 5}.000000\t{f}\n" for i, f in enumerate(files)))
    pack(lst, tmp_path / "ds", PackOptions(workers=0, **QUIET))
    with recpack.open(tmp_path / "ds") as ds:
        recs = {r.key: r for r in ds}
        assert len(recs) == len(files)
        for i, f in enumerate(files):
            assert recs[f].label == (i % 2, i % 5) and recs[f].meta["id"] == i
            assert recs[f].data == (tiny_jpegs / f).read_bytes()
        assert (ds.table()["flags"] & 1).all()


def test_lmdb_backend_round_trip_and_resume(tiny_jpegs: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opts = PackOptions(workers=0, backend="lmdb", **QUIET)
    out = tmp_path / "db"
    calls = {"n": 0}
    real = pack_workers.process

    def die_on_second_chunk(items, o):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(items, o)

    monkeypatch.setattr(pack_workers, "CHUNK_ITEMS", 5)
    monkeypatch.setattr(pack_workers, "process", die_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        pack(tiny_jpegs, out, opts)
    monkeypatch.setattr(pack_workers, "process", real)
    assert not (out / "index.json").exists()
    res = pack(tiny_jpegs, out, opts)
    assert res.resumed == 5
    pack(tiny_jpegs, tmp_path / "shards", PackOptions(workers=0, **QUIET))
    with recpack.open(out) as db, recpack.open(tmp_path / "shards") as sh:
        assert db.backend == "lmdb" and len(db) == len(sh)
        assert [(r.key, r.data, r.label) for r in db] == [(r.key, r.data, r.label) for r in sh]
        assert db[3].key == sh[3].key
        assert (db.labels == sh.labels).all()


def _mount_tmpfs(where: Path, size: int) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


@pytest.mark.root
def test_real_full_disk_on_a_small_tmpfs(tiny_jpegs: Path, tmp_path: Path) -> None:
    opts = PackOptions(num_shards=6, workers=0, progress=False)
    pack(tiny_jpegs, tmp_path / "ref", opts)
    total = sum(p.stat().st_size for p in (tmp_path / "ref").glob("*.rpk"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, (total // 2) // 4096 * 4096):
        pytest.skip("needs root and tmpfs to emulate a full disk")
    try:
        out = mnt / "ds"
        with pytest.raises(PackError, match="No space left on device.*re-run the same command"):
            pack(tiny_jpegs, out, opts)
        names = os.listdir(out)
        assert "index.json" not in names and not any(n.endswith(".tmp") for n in names)
        kept = [n for n in names if n.endswith(".rpk")]
        assert kept, "at least one finished shard should survive"
        subprocess.run(["mount", "-o", f"remount,size={4 * total}", str(mnt)], check=True)
        res = pack(tiny_jpegs, out, opts)
        assert res.resumed == len(kept)
        assert files_of(out) == files_of(tmp_path / "ref")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_unreadable_missing_and_undecodable_entries(tmp_path: Path) -> None:
    Image.new("RGB", (48, 32), (10, 200, 30)).save(tmp_path / "a.jpg", quality=90)
    good = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "dir.jpg").mkdir()  # unreadable even for root
    corrupt = bytearray(good)
    for i in range(len(corrupt) // 2, len(corrupt) - 2, 7):  # scramble entropy data, keep header and EOI
        corrupt[i] = 0xFF if i % 2 else 0x00
    (tmp_path / "corrupt.jpg").write_bytes(bytes(corrupt))
    lst = tmp_path / "files.txt"
    lst.write_text("# name<TAB>label\na.jpg\t1\ndir.jpg\t2\nmissing.jpg\t3\ncorrupt.jpg\t4\n")
    res = pack(lst, tmp_path / "ds", PackOptions(workers=0, image=ImageOptions(check="decode"), **QUIET))
    reasons = {s.key: s.reason for s in res.skipped}
    assert reasons["dir.jpg"].startswith("unreadable") and reasons["missing.jpg"] == "not found"
    assert reasons["corrupt.jpg"].startswith(("corrupt JPEG", "undecodable", "truncated"))
    assert res.records == 1
    with recpack.open(tmp_path / "ds") as ds:
        assert ds[0].data == good and ds[0].label == 1


def test_restart_markers_keep_pixels_and_make_crops_cheap(tiny_jpegs: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from recpack import imaging
    from recpack.decode import decode_rgb

    if imaging.restart_markers_available() is not None:
        pytest.skip("the C extension recpack._jpegregion was not built")
    opts = PackOptions(num_shards=2, workers=0, image=ImageOptions(restart_markers=True), **QUIET)
    res = pack(tiny_jpegs, tmp_path / "rst", opts)
    pack(tiny_jpegs, tmp_path / "plain", PackOptions(num_shards=2, workers=0, **QUIET))
    want = originals(tiny_jpegs)
    assert res.records == len(want) and not res.skipped
    with recpack.open(tmp_path / "rst") as ds:
        assert ds.manifest.pack["image"]["restart_markers"] is True
        for r in ds:
            assert r.data != want[r.key][0] and b"\xff\xdd\x00\x04\x00\x01" in r.data  # DRI: every MCU
            assert np.array_equal(decode_rgb(r.data), decode_rgb(want[r.key][0]))
            assert r.label == want[r.key][1]
    kw = dict(batch_size=5, seed=2, transform="train", size=32, device="cpu", threads=2, order="random")
    a = [b for b in recpack.Loader(tmp_path / "rst", **kw)]  # type: ignore[arg-type]
    b = [b for b in recpack.Loader(tmp_path / "plain", **kw)]  # type: ignore[arg-type]
    assert len(a) == len(b) and all(x[0].equal(y[0]) and x[1].equal(y[1]) for x, y in zip(a, b))
    # without the extension the option is refused up front, with what to do
    monkeypatch.setattr(imaging, "restart_markers_available", lambda: "restart markers need recpack's C extension")
    with pytest.raises(ValueError, match="C extension"):
        pack(tiny_jpegs, tmp_path / "none", opts)


def test_nothing_packed_is_an_error_with_reasons_and_the_root_hint(tiny_jpegs: Path, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    files = sorted(p.relative_to(tiny_jpegs).as_posix() for p in tiny_jpegs.rglob("*.jpg"))
    lst = lists / "train.lst"  # paths relative to tiny_jpegs, not to the list's folder
    lst.write_text("".join(f"{i}\t{i % 3}\t{f}\n" for i, f in enumerate(files)))
    out = tmp_path / "ds"
    for backend in ("shards", "lmdb"):
        with pytest.raises(PackError) as err:
            pack(lst, out, PackOptions(workers=0, backend=backend, **QUIET))
        msg = str(err.value)
        assert f"no images were packed: all {len(files)} inputs were skipped ({len(files)} not found)" in msg
        assert "Pass --root" in msg and "pack-report.tsv" in msg, msg
        assert any(f"{lists / f} does not exist" in msg for f in files), msg
        assert sorted(os.listdir(out)) == ["pack-report.tsv"]  # no index.json, no shard, no state
        report = [line.split("\t") for line in (out / "pack-report.tsv").read_text().splitlines()[1:]]
        assert sorted((k, r, p) for k, r, p in report) == sorted((f, "not found", str(lists / f)) for f in files)
        with pytest.raises(recpack.ManifestError):
            recpack.open(out)
    res = pack(lst, out, PackOptions(workers=0, **QUIET), root=tiny_jpegs)  # the fix, in the same folder
    assert res.records == len(files) and not res.skipped


def test_nothing_packed_in_the_cli_exits_1(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"not a jpeg")
    (src / "b.jpg").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "recpack", "pack", str(src), str(tmp_path / "ds"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "no images were packed: all 2 inputs were skipped (1 not an image, 1 empty file)" in r.stderr
    assert not (tmp_path / "ds" / "index.json").exists()


def test_no_progress_bar_when_stderr_is_not_a_terminal(tiny_jpegs: Path, tmp_path: Path) -> None:
    log = tmp_path / "pack.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "recpack", "pack", str(tiny_jpegs), str(tmp_path / "ds"),
                            "--workers", "0"], stdout=subprocess.DEVNULL, stderr=f)
    assert r.returncode == 0
    assert log.read_text() == ""  # no bar, not even a final one: a file gets no refresh lines
