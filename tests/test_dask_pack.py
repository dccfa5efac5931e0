"""Packing on a Dask distributed cluster (a real scheduler and two worker processes on loopback) gives the same
bytes as a local pack; a task that fails or a worker that dies mid-shard is redone, never half-published."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recpack.cli import cli
from recpack.pack import PackOptions, pack
from recpack.synth import make_image_folder

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import dask

    # scheduler, nannies and workers keep lock files under here, not in TMPDIR/dask-scratch-space (left behind)
    scratch = str(tmp_path_factory.mktemp("dask-scratch"))
    with dask.config.set({"temporary-directory": scratch}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=":0", silence_logs=40,  # any free port
                                      local_directory=scratch) as c:
            with distributed.Client(c) as client:
                yield c, client


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dask-src")
    make_image_folder(base / "src", 150, classes=3, size=(40, 30), seed=1)
    first = sorted((base / "src").iterdir())[0]
    (first / "broken.jpg").write_bytes(b"not a jpeg")  # skipped, listed in the report
    return base / "src"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _local(src: Path, out: Path) -> dict[str, bytes]:
    pack(src, out, PackOptions(seed=7, num_shards=3, workers=0, progress=False, fsync=False))
    return _files(out)


def test_dask_pack_equals_local_pack_byte_for_byte(cluster: Any, src: Path, tmp_path: Path) -> None:
    local = _local(src, tmp_path / "local")
    c, _ = cluster
    res = CliRunner().invoke(cli, ["pack", str(src), str(tmp_path / "dask"), "--seed", "7", "--num-shards", "3",
                                   "--scheduler", c.scheduler_address, "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    got = _files(tmp_path / "dask")
    assert sorted(got) == sorted(local) == ["index.json", "pack-report.tsv", "shard-00000.rpk", "shard-00001.rpk",
                                            "shard-00002.rpk"]
    assert got == local
    assert b"broken.jpg" in got["pack-report.tsv"]


def _plugin(marker: str, action: str) -> Any:
    """A worker plugin whose first shard-processing call (on whichever worker claims ``marker`` first) fails
    after the shard's first chunk was written: ``raise`` an error, or ``exit`` the worker process."""

    class FailOnce(distributed.WorkerPlugin):  # type: ignore[misc]
        def setup(self, worker: Any) -> None:
            import importlib

            p = importlib.import_module("recpack.packing.workers")

            orig = p.process
            calls = [0]

            def flaky(items: Any, opts: Any) -> Any:
                calls[0] += 1
                if calls[0] == 2:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        return orig(items, opts)
                    if action == "exit":
                        os._exit(1)  # the worker dies with a half-written temporary shard
                    raise OSError("injected failure")
                return orig(items, opts)

            p.process = flaky

    return FailOnce()


@pytest.mark.parametrize("action", ["raise", "exit"])
def test_failed_task_or_lost_worker_is_redone(cluster: Any, src: Path, tmp_path: Path, action: str) -> None:
    local = _local(src, tmp_path / "local")
    c, client = cluster
    plugin = _plugin(str(tmp_path / "marker"), action)
    client.register_plugin(plugin, name=f"fail-once-{action}")
    pids = set(client.run(os.getpid).values())
    try:
        pack(src, tmp_path / "dask", PackOptions(seed=7, num_shards=3, progress=False, fsync=False,
                                                 scheduler=client))
        client.wait_for_workers(2, timeout=30)
        # a worker process died (and its nanny started a new one) exactly when one was killed
        assert (set(client.run(os.getpid).values()) != pids) == (action == "exit")
    finally:
        client.unregister_worker_plugin(f"fail-once-{action}")
        client.restart()  # workers without the patched function for the next test
    assert (tmp_path / "marker").exists()  # the failure did happen
    got = _files(tmp_path / "dask")
    assert got == local  # no temporary files left, no half-written shard published, same bytes
