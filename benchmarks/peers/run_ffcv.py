"""Peer: FFCV (.beton files), run with the .peers/ffcv interpreter (tools/setup-peers.sh).

    .peers/ffcv/bin/python benchmarks/peers/run_ffcv.py pack --work W     # W/ffcv/{data,raw}.beton
    .peers/ffcv/bin/python benchmarks/peers/run_ffcv.py read --work W --mode decoded|raw [--variant quasi|random]

pack: ``DatasetWriter`` with ``RGBImageField(write_mode="jpg", jpeg_quality=95)`` in the shared shuffled order:
FFCV decodes and re-encodes every JPEG (its own libjpeg-turbo encoder) -- it cannot store the original bytes.
For the raw read path a second file stores the original JPEG bytes in a ``BytesField``.
read: ``Loader(os_cache=False, order=QUASI_RANDOM (or RANDOM), num_workers=--workers, drop_last=False)`` with
``RandomResizedCropRGBImageDecoder((224, 224))`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``ToTorchImage``
(decoded) or ``BytesDecoder`` (raw: the padded record bytes). FFCV compiles its pipeline with numba on the
first batch of a Loader (and compiles per Loader), so one untimed epoch of the same Loader runs first.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, parser, read_list, timed_epochs  # noqa: E402


class Source:
    """(PIL image, label) or (uint8 bytes array, label) for FFCV's writer."""

    def __init__(self, work: Path, raw: bool) -> None:
        self.work, self.raw = work, raw
        self.items = read_list(work)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import numpy as np
        from PIL import Image

        rel, label = self.items[i]
        path = self.work / "images" / rel
        if self.raw:
            return np.frombuffer(path.read_bytes(), dtype=np.uint8), label
        with Image.open(path) as im:
            return im.convert("RGB"), label


def main() -> None:
    args = parser(__doc__).parse_args()
    out = args.data or args.work / "ffcv"
    from ffcv.fields import BytesField, IntField, RGBImageField

    if args.action == "pack":
        from ffcv.writer import DatasetWriter

        out.mkdir(parents=True, exist_ok=True)
        for name, field, raw in (("data.beton", RGBImageField(write_mode="jpg", jpeg_quality=95), False),
                                 ("raw.beton", BytesField(), True)):
            tmp = out / (name + ".tmp")
            writer = DatasetWriter(str(tmp), {"image" if not raw else "data": field, "label": IntField()},
                                   num_workers=args.workers)
            writer.from_indexed_dataset(Source(args.work, raw), chunksize=100)
            tmp.rename(out / name)
        return

    import torch
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.bytes import BytesDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    order = OrderOption.RANDOM if args.variant == "random" else OrderOption.QUASI_RANDOM
    if args.mode == "decoded":
        fname = out / "data.beton"
        pipelines = {"image": [RandomResizedCropRGBImageDecoder((224, 224)), RandomHorizontalFlip(), ToTensor(),
                               ToTorchImage()],
                     "label": [IntDecoder(), ToTensor()]}
    else:
        fname = out / "raw.beton"
        pipelines = {"data": [BytesDecoder()], "label": [IntDecoder()]}
    total = len(read_list(args.work))
    indices = list(range(args.limit)) if args.limit else None
    loader = Loader(str(fname), batch_size=args.batch_size, num_workers=args.workers, os_cache=False, order=order,
                    seed=args.seed, drop_last=False, pipelines=pipelines, indices=indices)
    file_bytes = int(loader.reader.alloc_table["size"].sum())  # payload; the file is padded to FFCV's pages

    def epoch(_: int) -> tuple[int, int]:
        images = 0
        for batch in loader:
            images += batch[0].shape[0]
        return images, int(file_bytes * images / total)

    def warmup() -> None:  # a whole epoch: FFCV's epoch iterator cannot be stopped early safely
        for _ in loader:
            pass

    res = timed_epochs(args, [fname], epoch, warmup)
    emit(f"FFCV ({args.workers} threads, {order.name})", args.mode,
         f"ffcv {version('ffcv')}, torch {torch.__version__}", res, stored_bytes_per_image=file_bytes / total)


if __name__ == "__main__":
    main()
