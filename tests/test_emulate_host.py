"""recpack.bench.emulate.host: the environment check, tool lookup and device numbers (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recpack.bench.emulate import emulated_device, host
from recpack.bench.emulate.host import check_environment, device_number, find_tool, require_root, run_tool
from recpack.errors import RecpackError


def test_device_number() -> None:
    with pytest.raises(ValueError, match="not a block device"):
        device_number("/dev/null")
    blocks = [Path("/dev") / name for name in sorted(os.listdir("/sys/block")) if (Path("/dev") / name).exists()] \
        if os.path.isdir("/sys/block") else []
    if not blocks:
        pytest.skip("no block device nodes visible")
    expected = (Path("/sys/block") / blocks[0].name / "dev").read_text().strip()
    assert device_number(blocks[0]) == expected


def test_check_environment_gives_a_reason_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ok, reason = check_environment()
    assert not ok and "root" in reason and "skip" in reason
    with pytest.raises(RecpackError, match="needs? root"):
        require_root()
    with pytest.raises(RecpackError, match="root"):
        with emulated_device("hdd", 256 << 20):
            pass


def test_check_environment_names_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(host, "find_tool", lambda name: None if name.startswith("mkfs") else "/bin/" + name)
    ok, reason = check_environment()
    assert not ok and "mkfs.ext4" in reason
    ok, reason = check_environment(fs="zfs")
    assert not ok and "zfs" in reason
    with pytest.raises(RecpackError, match="mkfs.ext4"):
        require_root()


def test_run_tool_runs_the_full_path_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    tool = sbin / "mytool"
    tool.write_text('#!/bin/sh\necho "$0 $1"\n')
    tool.chmod(0o755)
    monkeypatch.setattr(host, "_SBIN", (str(sbin),))
    monkeypatch.setenv("PATH", "/nonexistent")  # like a non-login shell without the sbin folders
    assert find_tool("mytool") == str(tool)
    assert run_tool(["mytool", "a b"]) == f"{tool} a b\n"  # ran by its full path
    with pytest.raises(RecpackError, match="nosuchtool not found"):
        run_tool(["nosuchtool", "--version"])
    (sbin / "false").symlink_to("/bin/false")
    with pytest.raises(RecpackError, match="failed"):
        run_tool(["false"])
