"""Write the WebDataset test fixtures in tests/data/wds/ with the real webdataset library (run once; the output
is committed):

    .peers/torch/bin/python tools/make-wds-fixtures.py         # tools/setup-peers.sh torch makes the venv

Two tar shards written by ``webdataset.TarWriter`` with keys like ``cls0/img003``: ``.jpg`` (the original
bytes), ``.cls`` (the class index) and ``.json`` ({"label": ..., "caption": ...}). One sample has no ``.cls``
(its label comes from the JSON) and one has neither (unlabeled). ``expected.json`` lists key, label and the
sha256 of the image bytes, as webdataset's own reader returns them.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "wds"
PHOTOS = sorted((ROOT / "recpack" / "_photos").glob("*.jpg"))


def jpeg(i: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(1000 + i)
    with Image.open(PHOTOS[i % len(PHOTOS)]) as im:
        im = im.convert("RGB")
        w, h = im.size
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        small = im.crop((x, y, x + w // 2, y + h // 2)).resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    n = 0
    for shard in range(2):
        with wds.TarWriter(str(OUT / f"train-{shard:06d}.tar")) as sink:
            for j in range(4):
                i = shard * 4 + j
                label = i % 3
                sample: dict[str, object] = {"__key__": f"cls{label}/img{i:03d}", "jpg": jpeg(i, (48 + 4 * j, 40))}
                if i != 5 and i != 6:
                    sample["cls"] = label
                if i != 6:
                    sample["json"] = {"label": label, "caption": f"image {i}"}
                sink.write(sample)
                n += 1
    expected = []
    for sample in wds.WebDataset(sorted(str(p) for p in OUT.glob("*.tar")), shardshuffle=False):
        meta = json.loads(sample["json"]) if "json" in sample else None
        cls = int(sample["cls"]) if "cls" in sample else None
        expected.append({"key": sample["__key__"], "label": cls if cls is not None else
                         (meta["label"] if meta else None), "image_sha256": hashlib.sha256(sample["jpg"]).hexdigest(),
                         "image_bytes": len(sample["jpg"])})
    assert len(expected) == n
    (OUT / "expected.json").write_text(json.dumps({"webdataset": wds.__version__, "samples": expected}, indent=1)
                                      + "\n")
    print(f"wrote {OUT} ({sum(p.stat().st_size for p in OUT.iterdir())} bytes)")


if __name__ == "__main__":
    main()
