"""Per-image decode and transform throughput on ImageNet-like JPEGs, 1 and 2 threads (or --threads).

    python benchmarks/decode.py [--images 512] [--size 500x375] [--threads 1,2] [--repeat 5]
                                [--workdir /tmp/recpack-bench-decode] [--json out.json]

Grid (bytes held in memory, so the page cache plays no part; one warm-up pass, then the median of --repeat
passes over all images; threads take chunks of 16 images from a ThreadPoolExecutor):
- decode only: recpack.decode.decode_rgb with simplejpeg and with Pillow, and decode_crop of the train boxes
  (the region decoder: only the part of the JPEG the crop needs);
- train (RandomResizedCrop to --out + flip, boxes from transforms.train_params): decode_crop_resize as the
  Loader runs it (region decoder + reduced-size decoding where the crop allows), with whole-image decoding
  (simplejpeg), without reduced-size decoding, and a torchvision-like Pillow path (decode, resize(box),
  transpose, np.asarray, copy into the batch);
- val (shorter side to round(out / 0.875), centre crop --out): decode_crop_resize with and without reduced
  decoding, and the Pillow path (resize, crop, np.asarray, copy).
Every transform writes into one preallocated (N, 3, out, out) uint8 batch. Prints a markdown table and
writes the rows as JSON (default: WORKDIR/decode.json). Does not touch docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time, today, versions  # noqa: E402

from recpack.decode import decode_crop, decode_rgb, image_size, region_decoder  # noqa: E402
from recpack.imaging import add_restart_markers, restart_markers_available  # noqa: E402
from recpack.synth import make_image_folder  # noqa: E402
from recpack.transforms import decode_crop_resize, train_params, val_params  # noqa: E402

CHUNK = 16  # images per thread-pool task: queue overhead stays far below 1% of the work


def load_images(workdir: Path, n: int, size: tuple[int, int]) -> list[bytes]:
    folder = workdir / f"jpegs_{size[0]}x{size[1]}"
    paths = sorted(folder.rglob("*.jpg")) if folder.exists() else []
    if len(paths) < n:
        paths = make_image_folder(folder, n, size=size, progress=True)
    return [p.read_bytes() for p in paths[:n]]


def _decode(data: bytes, decoder: str) -> None:
    decode_rgb(data, decoder)


def pillow_train(data: bytes, p: np.ndarray, out: torch.Tensor) -> None:
    x, y, w, h, flip = p.tolist()
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im = im.resize((out.shape[2], out.shape[1]), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.copy_(torch.from_numpy(np.array(im)).permute(2, 0, 1))


def pillow_val(data: bytes, side: int, out: torch.Tensor) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        short = round(side / 0.875)
        w, h = im.size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = int(round((nw - side) / 2)), int(round((nh - side) / 2))
        im = im.crop((left, top, left + side, top + side))
        out.copy_(torch.from_numpy(np.array(im)).permute(2, 0, 1))


def run(datas: list[bytes], work: Callable[[int], None], threads: int, repeat: int) -> float:
    """Images per second of ``work(i)`` over all images on ``threads`` threads (median of ``repeat``)."""
    chunks = [range(i, min(i + CHUNK, len(datas))) for i in range(0, len(datas), CHUNK)]

    def task(r: range) -> None:
        for i in r:
            work(i)

    with ThreadPoolExecutor(threads) as pool:
        def once() -> None:
            list(pool.map(task, chunks))

        once()  # warm-up: thread start, first-touch of the batch, allocator
        return len(datas) / median_time(once, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", default="500x375", help="stored image size WxH (default ImageNet-like 500x375)")
    ap.add_argument("--out", type=int, default=224, help="output side in pixels")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/recpack-bench-decode"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    assert len(size) == 2, "--size is WxH"
    threads = [int(t) for t in args.threads.split(",")]

    datas = load_images(args.workdir, args.images, (size[0], size[1]))
    dims = np.array([image_size(d) for d in datas])
    tp = train_params(np.random.default_rng(0), dims[:, 0], dims[:, 1])
    vp = val_params(dims[:, 0], dims[:, 1], args.out)
    batch = torch.empty((len(datas), 3, args.out, args.out), dtype=torch.uint8)
    S = args.out
    # the same images as `recpack pack --restart-markers` stores them (lossless: same pixels)
    rst = [add_restart_markers(d) for d in datas] if restart_markers_available() is None else None

    rows: list[tuple[str, Callable[[int], None]]] = [
        ("decode only, simplejpeg (full size)", lambda i: _decode(datas[i], "simplejpeg")),
        ("decode only, Pillow (full size)", lambda i: _decode(datas[i], "pillow")),
        (f"decode only, region of the train {S} crop ({region_decoder()})",
         lambda i: decode_crop(datas[i], tuple(tp[i, :4].tolist()), (S, S))),
        (f"train {S}: recpack default (region + reduced decode)",
         lambda i: decode_crop_resize(datas[i], tp[i], batch[i])),
        *([(f"decode only, region of the train {S} crop, packed with --restart-markers",
            lambda i: decode_crop(rst[i], tuple(tp[i, :4].tolist()), (S, S))),
           (f"train {S}: recpack default, packed with --restart-markers",
            lambda i: decode_crop_resize(rst[i], tp[i], batch[i]))] if rst is not None else []),
        (f"train {S}: recpack, whole-image decode (simplejpeg), reduced",
         lambda i: decode_crop_resize(datas[i], tp[i], batch[i], "simplejpeg")),
        (f"train {S}: recpack, region, no reduced decode",
         lambda i: decode_crop_resize(datas[i], tp[i], batch[i], reduce=False)),
        (f"train {S}: Pillow path (torchvision-like)", lambda i: pillow_train(datas[i], tp[i], batch[i])),
        (f"val {S}: recpack, reduced decode", lambda i: decode_crop_resize(datas[i], vp[i], batch[i])),
        (f"val {S}: recpack, full decode", lambda i: decode_crop_resize(datas[i], vp[i], batch[i], reduce=False)),
        (f"val {S}: Pillow path (torchvision-like)", lambda i: pillow_val(datas[i], S, batch[i])),
    ]
    results = []
    for name, work in rows:
        rates = {t: run(datas, work, t, args.repeat) for t in threads}
        results.append({"path": name, "images_per_s": rates})
        print(f"  {name}: " + ", ".join(f"{t} thr {r:,.0f}/s" for t, r in rates.items()), file=sys.stderr)

    kb = np.mean([len(d) for d in datas]) / 1000
    head = (f"{len(datas)} synthetic photo-like JPEGs, {size[0]}x{size[1]}, q95, mean {kb:.0f} KB, bytes in "
            f"memory (warm); {machine()}; {versions('numpy', 'PIL', 'simplejpeg', 'torch')}; torch intra-op "
            f"threads {torch.get_num_threads()}; median of {args.repeat}; {today()}")
    cols = " | ".join(f"{t} thread{'s' if t > 1 else ''} (img/s)" for t in threads)
    lines = [head, "", f"| path | {cols} | µs/image (1 thread) | scaling |",
             "| --- |" + " ---: |" * (len(threads) + 2)]
    for r in results:
        rates = r["images_per_s"]
        first, last = rates[threads[0]], rates[threads[-1]]
        per = f"{1e6 / rates[1]:,.0f}" if 1 in rates else "-"
        lines.append(f"| {r['path']} | " + " | ".join(f"{rates[t]:,.0f}" for t in threads)
                     + f" | {per} | {last / first:.2f}x |")
    print("\n".join(lines))
    out = args.json or args.workdir / "decode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": head, "date": today(), "machine": machine(), "threads": threads,
                               "size": list(size), "out": S, "cache": "warm (bytes in memory)",
                               "rows": results}, indent=1))


if __name__ == "__main__":
    main()
