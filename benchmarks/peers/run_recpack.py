"""recpack.Loader, run with the interpreter that has recpack installed (the orchestrator's own).

    python benchmarks/peers/run_recpack.py pack --work W       # W/recpack and W/recpack-restart (seed 0)
    python benchmarks/peers/run_recpack.py read --work W --mode decoded|raw [--variant V]

decoded: ``Loader(transform="train", size=224, device="cpu", threads=--workers)`` (order "auto" unless
--variant names one). raw: ``Loader(decode=False, transform=None, order="shard_shuffle" (or --variant),
threads=--workers)``: the checked record bytes, shuffled, no decode.
--variant ORDER[,run=N,interleave=N,window=N,io=MODE,restart_markers] sets the order, its shard_shuffle
options and the Loader's io mode (auto, buffered, direct); ``restart_markers`` reads W/recpack-restart, the same
images packed with ``recpack pack --restart-markers`` (every JPEG losslessly re-written with a restart marker
after every MCU, so crops decode only their part).
"""

from __future__ import annotations

from typing import Any

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, parser, read_list, timed_epochs  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    import recpack

    if args.action == "pack":
        from recpack.imaging import ImageOptions
        from recpack.pack import PackOptions

        for name, restart_markers in (("recpack", False), ("recpack-restart", True)):
            recpack.pack(args.work / "images", args.work / name, PackOptions(
                seed=0, progress=False, overwrite=True, image=ImageOptions(restart_markers=restart_markers)))
        return

    import torch

    # --variant ORDER[,run=N,interleave=N,window=N,io=MODE][,restart_markers]
    order, *opts = (args.variant or "").split(",")
    restart = "restart_markers" in opts
    opts = [o for o in opts if o != "restart_markers"]
    out = args.data or args.work / ("recpack-restart" if restart else "recpack")
    kw: dict[str, Any] = {k: (int(v) if v.isdigit() else v) for k, v in (o.split("=") for o in opts)}
    if args.mode == "decoded":
        loader = recpack.Loader(out, batch_size=args.batch_size, seed=args.seed, transform="train", size=224,
                                device="cpu", threads=args.workers, order=order or "auto", **kw)
    else:
        loader = recpack.Loader(out, batch_size=args.batch_size, seed=args.seed, decode=False, transform=None,
                                device="cpu", threads=args.workers, order=order or "shard_shuffle", **kw)
    n = args.limit or loader.table.n
    total = len(read_list(args.work)) if (args.work / "list.tsv").exists() else loader.table.n

    def epoch(e: int) -> tuple[int, int]:
        loader.set_epoch(e)
        images = nbytes = 0
        before = loader.stats["read_bytes"]
        for batch in loader:
            if args.mode == "raw":  # image bytes delivered, as the peers count them (not the record headers)
                images += len(batch[0])
                nbytes += sum(len(b) for b in batch[0])
            else:
                images += batch[0].shape[0]
            if images >= n:
                break
        return images, nbytes if args.mode == "raw" else int(loader.stats["read_bytes"] - before)

    def warmup() -> None:
        loader.set_epoch(0)
        for k, _ in enumerate(loader):
            if k + 1 >= args.warmup:
                break

    res = timed_epochs(args, [out], epoch, warmup)
    io = f", io={loader.io}" if "io" in kw else f", io=auto: {loader.io}"
    io += ", packed with --restart-markers" if restart else ""
    emit(f"recpack.Loader ({args.workers} threads, {loader.order}{io})", args.mode,
         f"recpack {recpack.__version__}, torch {torch.__version__}", res, order_reason=loader.order_reason,
         records=total)


if __name__ == "__main__":
    main()
