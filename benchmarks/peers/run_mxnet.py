"""Peer: MXNet RecordIO (.rec + .idx), run with the .peers/mxnet interpreter (tools/setup-peers.sh).

    .peers/mxnet/bin/python benchmarks/peers/run_mxnet.py pack --work W      # W/mxnet/data.{rec,idx}
    .peers/mxnet/bin/python benchmarks/peers/run_mxnet.py read --work W --mode decoded
    .peers/mxnet/bin/python benchmarks/peers/run_mxnet.py read --work W --mode raw --variant random|sequential

pack: ``MXIndexedRecordIO`` + ``recordio.pack`` of the original JPEG bytes (as im2rec with --pass-through) in
the shared shuffled order. decoded: ``ImageRecordUInt8Iter(shuffle=True, random_resized_crop=True,
min_random_area=0.08, min/max_aspect_ratio=3/4..4/3, rand_mirror=True, data_shape=(3, 224, 224),
preprocess_threads=--workers, ctx="cpu")`` with OMP_NUM_THREADS=--workers (see main).
raw: ``MXIndexedRecordIO.read_idx`` in random order (``random``) or ``MXRecordIO.read`` in file order
(``sequential``, not shuffled), one thread, ``recordio.unpack`` per record.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, parser, read_list, timed_epochs  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    # MXNet caps its OpenMP threads at half the cores on x86 (it assumes hyper-threads) unless OMP_NUM_THREADS is
    # set, and ImageRecordIter's preprocess_threads are OpenMP threads. Measured here on 2 cores: without this, or
    # with the default ctx="gpu", it decodes on one core (~440 images/s); with both, ~800.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.workers))
    import mxnet as mx
    from mxnet import recordio

    out = args.data or args.work / "mxnet"
    rec, idx = out / "data.rec", out / "data.idx"
    if args.action == "pack":
        out.mkdir(parents=True, exist_ok=True)
        w = recordio.MXIndexedRecordIO(str(idx) + ".tmp", str(rec) + ".tmp", "w")
        for i, (rel, label) in enumerate(read_list(args.work)):
            header = recordio.IRHeader(0, float(label), i, 0)
            w.write_idx(i, recordio.pack(header, (args.work / "images" / rel).read_bytes()))
        w.close()
        Path(str(rec) + ".tmp").rename(rec)
        Path(str(idx) + ".tmp").rename(idx)
        return

    total = len(read_list(args.work))
    n = args.limit or total
    rec_bytes = rec.stat().st_size
    ver = f"mxnet {mx.__version__}"

    if args.mode == "decoded":
        it = mx.io.ImageRecordUInt8Iter(
            path_imgrec=str(rec), path_imgidx=str(idx), data_shape=(3, 224, 224), batch_size=args.batch_size,
            shuffle=True, seed=args.seed, random_resized_crop=True, min_random_area=0.08,
            max_random_area=1.0, min_aspect_ratio=3 / 4, max_aspect_ratio=4 / 3, rand_mirror=True,
            preprocess_threads=args.workers, round_batch=False, verbose=False, ctx="cpu")

        def epoch(_: int) -> tuple[int, int]:
            it.reset()
            images = 0
            for batch in it:
                batch.data[0].wait_to_read()
                # round_batch=False leaves the tail of the last batch unfilled (pad stays 0): cap at n
                images = min(images + batch.data[0].shape[0], n)
                if images >= n:
                    break
            return images, int(rec_bytes * images / total)

        def warmup() -> None:
            for k, batch in enumerate(it):
                batch.data[0].wait_to_read()
                if k + 1 >= args.warmup:
                    break

        res = timed_epochs(args, [out], epoch, warmup)
        emit(f"MXNet ImageRecordUInt8Iter ({args.workers} threads)", "decoded", ver, res)
        return

    sequential = args.variant == "sequential"

    def epoch_raw(e: int) -> tuple[int, int]:
        images = nbytes = 0
        if sequential:
            r = recordio.MXRecordIO(str(rec), "r")
            while images < n:
                s = r.read()
                if s is None:
                    break
                _, data = recordio.unpack(s)
                images += 1
                nbytes += len(data)
        else:
            r = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
            keys = list(r.keys)
            random.Random(e).shuffle(keys)
            for k in keys[:n]:
                _, data = recordio.unpack(r.read_idx(k))
                images += 1
                nbytes += len(data)
        r.close()
        return images, nbytes

    res = timed_epochs(args, [out], epoch_raw)
    name = "MXNet MXRecordIO, file order (not shuffled)" if sequential else "MXNet MXIndexedRecordIO, random order"
    emit(name, "raw", ver, res)


if __name__ == "__main__":
    main()
