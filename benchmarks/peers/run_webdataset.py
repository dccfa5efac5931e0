"""Peer: WebDataset tar shards, streamed with shard shuffling and a sample shuffle buffer.

    python benchmarks/peers/run_webdataset.py pack --work W        # W/webdataset/shard-NNNNN.tar
    python benchmarks/peers/run_webdataset.py read --work W --mode decoded|raw

pack: ``wds.ShardWriter`` (1,000 samples per shard, so that every DataLoader worker gets shards) in the shared
shuffled order, the JPEG bytes as they are. read: ``WebDataset(shardshuffle=True).shuffle(1000)``, then
``decode("pil")`` + the hand-written RandomResizedCrop-224 + flip (decoded) or nothing (raw), batched by a
``WebLoader`` with --workers worker processes (each streams its own shards).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_batches, dir_bytes, emit, parser, pil_train_transform, raw_collate, read_list, timed_epochs  # noqa: E402

PER_SHARD = 1000
SHUFFLE_BUFFER = 1000


def identity(x):  # type: ignore[no-untyped-def]
    return x


def main() -> None:
    args = parser(__doc__).parse_args()
    import webdataset as wds

    out = args.data or args.work / "webdataset"
    if args.action == "pack":
        out.mkdir(parents=True, exist_ok=True)
        with wds.ShardWriter(str(out / "shard-%05d.tar"), maxcount=PER_SHARD, maxsize=1 << 30, verbose=0) as sink:
            for i, (rel, label) in enumerate(read_list(args.work)):
                sink.write({"__key__": f"{i:08d}", "jpg": (args.work / "images" / rel).read_bytes(), "cls": label})
        return

    import torch

    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    total = len(read_list(args.work))
    shard_bytes = dir_bytes(out, (".tar",))

    def make(e: int):  # type: ignore[no-untyped-def]
        ds = wds.WebDataset(urls, shardshuffle=len(urls), seed=args.seed + e, empty_check=False)
        ds = ds.shuffle(SHUFFLE_BUFFER)
        if args.mode == "decoded":
            ds = ds.decode("pil").to_tuple("jpg", "cls").map_tuple(pil_train_transform, identity)
            collate = None
        else:
            ds = ds.to_tuple("jpg", "cls")
            collate = raw_collate
        if args.limit:
            ds = ds.slice(args.limit // max(1, args.workers))
        return wds.WebLoader(ds, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)

    def epoch(e: int) -> tuple[int, int]:
        images, nbytes = count_batches(make(e), args.mode == "decoded")
        # decoded: the tar bytes streamed (every shard is read whole)
        return images, nbytes if nbytes else int(shard_bytes * images / total)

    def warmup() -> None:
        for k, _ in enumerate(make(0)):
            if k + 1 >= args.warmup:
                break

    res = timed_epochs(args, [out], epoch, warmup)
    emit(f"WebDataset ({args.workers} workers)", args.mode, f"webdataset {wds.__version__}, torch {torch.__version__}",
         res, shards=len(urls), shuffle_buffer=SHUFFLE_BUFFER)


if __name__ == "__main__":
    main()
