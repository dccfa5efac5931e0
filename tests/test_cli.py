"""The command line through click's CliRunner, and the public API surface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import recpack
from recpack.cli import cli
from recpack.cli.options import parse_size


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_pack_inspect_verify(tiny_jpegs: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "ds")
    code, text = run("pack", str(tiny_jpegs), out, "--num-shards", "2", "--workers", "0", "--no-progress")
    assert code == 0 and "packed 24 of 24 images into 2 shards" in text
    code, text = run("pack", str(tiny_jpegs), out, "--num-shards", "2", "--workers", "0", "--no-progress")
    assert code == 0 and "already packed" in text
    code, text = run("inspect", out, "--json")
    info = json.loads(text)
    assert code == 0 and info["records"] == 24 and info["classes"] == 3 and len(info["shards"]) == 2
    assert sum(info["records_per_class"].values()) == 24 and info["image_width"]["min"] > 0
    code, text = run("inspect", out)
    assert code == 0 and "24 records" in text and "classes: 3" in text
    code, text = run("verify", out, "--decode", "--no-progress")
    assert code == 0 and text.startswith("OK: 24 of 24")
    code, text = run("verify", out, "--json")
    assert code == 0 and json.loads(text)["ok"] is True


def test_errors_exit_nonzero_with_clear_messages(tiny_jpegs: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run("pack", str(tiny_jpegs), str(out), "--workers", "0", "--no-progress")
    shard = out / "shard-00000.rpk"
    raw = bytearray(shard.read_bytes())
    raw[5000] ^= 0xFF
    shard.write_bytes(raw)
    code, text = run("verify", str(out), "--no-progress")
    assert code == 1 and "BAD  shard-00000.rpk @ offset" in text and "FAILED" in text
    code, text = run("inspect", str(tmp_path))
    assert code == 1 and "not a recpack dataset" in text
    code, text = run("pack", str(tiny_jpegs), str(out), "--seed", "3", "--workers", "0", "--no-progress")
    assert code == 1 and "--overwrite" in text
    code, text = run("pack", str(tiny_jpegs), str(tmp_path / "x"), "--shard-size", "lots")
    assert code == 2 and "not a size" in text


def test_pack_reports_bad_inputs(bad_inputs: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, expected = bad_inputs
    code, text = run("pack", str(folder), str(tmp_path / "ds"), "--workers", "0", "--no-progress")
    assert code == 0 and f"skipped {len(expected)} bad inputs" in text and "pack-report.tsv" in text
    code, text = run("pack", str(folder), str(tmp_path / "s"), "--workers", "0", "--no-progress", "--strict")
    assert code == 1 and "error:" in text


def test_parse_size() -> None:
    assert parse_size("256MiB") == 256 << 20 and parse_size("1GB") == 10**9 and parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("-1")


def test_demo_and_python_m(tmp_path: Path) -> None:
    code, text = run("demo", "--images", "40", "--size", "96x72", "--workdir", str(tmp_path), "--workers", "0")
    assert code == 0 and "sequential read images/s" in text and "Loader train 224" in text
    assert (tmp_path / "dataset" / "index.json").exists()
    r = subprocess.run([sys.executable, "-m", "recpack", "--version"], capture_output=True, text=True, check=True)
    assert recpack.__version__ in r.stdout


def test_public_api() -> None:
    assert sorted(recpack.__all__) == sorted([
        "__version__", "open", "Dataset", "Loader", "LoaderDataset", "verify", "Record", "pack", "PackOptions",
        "PackResult", "ImageOptions",
        "RecpackError", "FormatError", "CorruptRecord", "ManifestError", "BadImage", "DecodeError", "PackError",
    ])
    for name in recpack.__all__:
        assert hasattr(recpack, name)
    assert issubclass(recpack.CorruptRecord, recpack.FormatError)
    assert issubclass(recpack.FormatError, recpack.RecpackError)
