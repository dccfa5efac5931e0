"""Write the MXNet RecordIO test fixtures in tests/data/mxnet/ with the real mxnet 1.9.1 (run once; the
output is committed):

    .peers/mxnet/bin/python tools/make-mxnet-fixtures.py        # tools/setup-peers.sh mxnet makes the venv

* ``indexed.rec`` + ``indexed.idx``: ``mx.recordio.MXIndexedRecordIO`` + ``mx.recordio.pack`` of small
  JPEGs with single float labels, keys 100, 101, ... (not the positions). Record 3 carries the RecordIO magic
  0xced7230a four times at 4-aligned payload offsets inside a JPEG COM segment (two of them back to back), so
  mxnet's writer splits it into first/middle/end frames, one middle frame empty. Record 5 holds the magic at
  an unaligned offset (not split).
* ``im2rec.rec`` + ``im2rec.idx`` + ``im2rec.lst`` + ``images/``: mxnet's own ``tools/im2rec.py --pass-through
  --pack-label`` run on a .lst mixing single-label and multi-label (flag > 0) lines.
* ``expected.json``: what mxnet's own readers return for every record, in file order: idx key, offset,
  IRHeader (flag, label(s), id, id2), sha256 and length of the image bytes, and the sha256 of the raw record
  ``MXRecordIO.read`` returns.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import mxnet as mx
from mxnet import recordio

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "mxnet"
PHOTOS = sorted((ROOT / "recpack" / "_photos").glob("*.jpg"))
MAGIC = struct.pack("<I", 0xCED7230A)


def jpeg(i: int, size: tuple[int, int]) -> bytes:
    """A small real photo crop (deterministic for i)."""
    rng = np.random.default_rng(i)
    with Image.open(PHOTOS[i % len(PHOTOS)]) as im:
        im = im.convert("RGB")
        w, h = im.size
        cw, ch = w // 2, h // 2
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        small = im.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def with_magic_comment(data: bytes, aligned_in_payload: bool) -> bytes:
    """Insert a COM segment after SOI holding the magic. The payload is the 24-byte IRHeader + the JPEG, so
    JPEG offset k sits at payload offset 24 + k: aligned means (24 + k) % 4 == 0."""
    # SOI (2) + FF FE (2) + length (2) = 6 bytes before the comment body at JPEG offset 6 -> payload 30
    if aligned_in_payload:
        body = b".." + MAGIC + b"abcd" + MAGIC + MAGIC + b"efgh" + MAGIC + b"tail"  # magic at 32, 40, 44, 52
    else:
        body = b"." + MAGIC + b"xyz"  # magic at payload offset 31: not 4-aligned, so never split
    seg = b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + seg + data[2:]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def describe(prefix: Path) -> list[dict[str, object]]:
    """Every record as mxnet reads it: through the index (read_idx) and sequentially (MXRecordIO.read)."""
    idx = recordio.MXIndexedRecordIO(str(prefix.with_suffix(".idx")), str(prefix.with_suffix(".rec")), "r")
    by_offset = sorted((off, key) for key, off in idx.idx.items())
    seq = recordio.MXRecordIO(str(prefix.with_suffix(".rec")), "r")
    out: list[dict[str, object]] = []
    for off, key in by_offset:
        raw = idx.read_idx(key)
        assert seq.read() == raw, "sequential and indexed reads disagree"
        header, image = recordio.unpack(raw)
        label = header.label.tolist() if isinstance(header.label, np.ndarray) else float(header.label)
        out.append({"key": int(key), "offset": int(off), "flag": int(header.flag), "label": label,
                    "id": int(header.id), "id2": int(header.id2), "image_sha256": sha(image),
                    "image_bytes": len(image), "raw_sha256": sha(raw), "raw_bytes": len(raw),
                    "contains_magic": MAGIC in raw})
    assert seq.read() is None
    idx.close()
    seq.close()
    return out


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    # 1. MXIndexedRecordIO + recordio.pack, single labels, keys that are not positions
    sizes = [(64, 48), (48, 64), (56, 56), (72, 48), (48, 40), (64, 64), (40, 56), (60, 45)]
    w = recordio.MXIndexedRecordIO(str(OUT / "indexed.idx"), str(OUT / "indexed.rec"), "w")
    for i, size in enumerate(sizes):
        data = jpeg(i, size)
        if i == 3:
            data = with_magic_comment(data, aligned_in_payload=True)
        elif i == 5:
            data = with_magic_comment(data, aligned_in_payload=False)
        w.write_idx(100 + i, recordio.pack(recordio.IRHeader(0, float(i % 3), 100 + i, 7), data))
    w.close()

    # 2. mxnet's own im2rec.py (--pass-through --pack-label) on a .lst with single and multi-label lines
    img_dir = OUT / "images"
    (img_dir / "a").mkdir(parents=True)
    (img_dir / "b").mkdir(parents=True)
    lines = []
    for i in range(6):
        rel = f"{'ab'[i % 2]}/img{i}.jpg"
        (img_dir / rel).write_bytes(jpeg(50 + i, (48 + 4 * i, 40)))
        labels = [f"{i % 2:.6f}"] if i < 3 else [f"{i % 2:.6f}", f"{0.25 * i:.6f}", "3.000000"]
        lines.append("\t".join([str(10 + i), *labels, rel]))
    (OUT / "im2rec.lst").write_text("\n".join(lines) + "\n")
    im2rec = Path(mx.__file__).parent / "tools" / "im2rec.py"
    # im2rec.py imports cv2 at the top but uses it only to re-encode; --pass-through never calls it, so a stub
    # module stands in for OpenCV (which has no build for this numpy here)
    stub = OUT.parent / "_cv2stub"
    stub.mkdir(exist_ok=True)
    (stub / "cv2.py").write_text("def __getattr__(name):\n    raise RuntimeError('cv2 stub: ' + name)\n")
    try:
        subprocess.run([sys.executable, str(im2rec), str(OUT / "im2rec.lst"), str(img_dir), "--pass-through",
                        "--pack-label", "--num-thread", "1", "--no-shuffle"], check=True, cwd=OUT,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(stub)})
    finally:
        shutil.rmtree(stub)

    expected = {"mxnet": mx.__version__, "indexed": describe(OUT / "indexed"), "im2rec": describe(OUT / "im2rec")}
    assert any(r["contains_magic"] and r["flag"] == 0 for r in expected["indexed"])  # type: ignore[index]
    assert any(int(r["flag"]) > 0 for r in expected["im2rec"])  # type: ignore[call-overload,index]
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")
    assert total < 300_000, total
    os.sync()


if __name__ == "__main__":
    main()
