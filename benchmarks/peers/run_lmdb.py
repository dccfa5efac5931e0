"""Peer: an LMDB database of raw JPEG bytes (one key per image), read in random order by a torch DataLoader.

    python benchmarks/peers/run_lmdb.py pack --work W       # W/lmdb/data.mdb
    python benchmarks/peers/run_lmdb.py read --work W --mode decoded|raw [--variant readahead|noreadahead]

pack: keys ``%08d`` in the shared shuffled order, values the JPEG bytes, labels as one int64 array under
``__labels__``; a commit every 1,000 puts. read: ``DataLoader(shuffle=True, num_workers=--workers)``; each
worker opens the environment once (readonly, lock=False) and does one ``txn.get`` per sample; decoded adds
Pillow decode + the hand-written RandomResizedCrop-224 + flip. ``--variant noreadahead`` opens with
readahead=False (the usual advice for random access; slower from a cold cache here).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_batches, emit, parser, pil_decode, pil_train_transform, raw_collate, read_list, timed_epochs  # noqa: E402


class LmdbImages:
    def __init__(self, path: Path, n: int, decode: bool, readahead: bool) -> None:
        self.path, self.n, self.decode, self.readahead = str(path), n, decode, readahead
        self.env = None
        self.labels = None

    def _open(self) -> None:
        import lmdb
        import numpy as np

        self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=self.readahead, meminit=False)
        with self.env.begin() as txn:
            self.labels = np.frombuffer(txn.get(b"__labels__"), dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        if self.env is None:  # once per worker process: an LMDB environment must not cross a fork
            self._open()
        with self.env.begin() as txn:  # type: ignore[union-attr]
            data = txn.get(b"%08d" % i)
        label = int(self.labels[i])  # type: ignore[index]
        if not self.decode:
            return data, label
        return pil_train_transform(pil_decode(data)), label


def main() -> None:
    args = parser(__doc__).parse_args()
    import lmdb
    import numpy as np

    out = args.data or args.work / "lmdb"
    if args.action == "pack":
        items = read_list(args.work)
        files = [args.work / "images" / rel for rel, _ in items]
        out.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(out), map_size=2 * sum(p.stat().st_size for p in files) + (64 << 20))
        txn = env.begin(write=True)
        for i, p in enumerate(files):
            txn.put(b"%08d" % i, p.read_bytes())
            if i % 1000 == 999:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"__labels__", np.array([label for _, label in items], dtype=np.int64).tobytes())
        txn.commit()
        env.sync()
        env.close()
        return

    import torch
    from torch.utils.data import DataLoader, RandomSampler

    total = len(read_list(args.work))
    n = args.limit or total
    ds = LmdbImages(out, total, args.mode == "decoded", args.variant != "noreadahead")
    value_bytes = (out / "data.mdb").stat().st_size
    g = torch.Generator().manual_seed(args.seed)

    def make() -> DataLoader:
        return DataLoader(ds, batch_size=args.batch_size, sampler=RandomSampler(ds, num_samples=n, generator=g),
                          num_workers=args.workers, collate_fn=None if args.mode == "decoded" else raw_collate)

    def epoch(_: int) -> tuple[int, int]:
        images, nbytes = count_batches(make(), args.mode == "decoded")
        return images, nbytes if nbytes else int(value_bytes * images / total)

    def warmup() -> None:
        for k, _ in enumerate(make()):
            if k + 1 >= args.warmup:
                break

    res = timed_epochs(args, [out], epoch, warmup)
    emit(f"LMDB + DataLoader ({args.workers} workers)", args.mode,
         f"lmdb {lmdb.__version__}, torch {torch.__version__}", res, readahead=ds.readahead)


if __name__ == "__main__":
    main()
