"""Peer: ImageFolder-style JPEG files read by a torch DataLoader (the torchvision ImageFolder recipe).

    python benchmarks/peers/run_files.py read --work W --mode decoded|raw [--variant dataloader|plain]

decoded: DataLoader(shuffle=True, num_workers=--workers), each worker opens the file, decodes it with Pillow
(``convert("RGB")`` as torchvision's loader does) and applies the hand-written RandomResizedCrop-224 + flip.
raw: the same DataLoader returning each file's bytes (random order); ``--variant plain``: a bare read loop
over the files in random order in this process (a floor, not a loader). ``pack`` does nothing: the files are
the format.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_batches, emit, parser, pil_train_transform, raw_collate, read_list, timed_epochs  # noqa: E402


class Files:
    def __init__(self, root: Path, items: list[tuple[str, int]], decode: bool) -> None:
        self.paths = [str(root / rel) for rel, _ in items]
        self.labels = [label for _, label in items]
        self.decode = decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        if not self.decode:
            with open(self.paths[i], "rb") as f:
                return f.read(), self.labels[i]
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return pil_train_transform(img), self.labels[i]


def main() -> None:
    args = parser(__doc__).parse_args()
    if args.action == "pack":
        return
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    root = args.data or args.work / "images"
    items = sorted(read_list(args.work))  # storage (folder) order; the sampler shuffles
    n = args.limit or len(items)
    ds = Files(root, items, args.mode == "decoded")
    sizes = [Path(p).stat().st_size for p in ds.paths]
    g = torch.Generator().manual_seed(args.seed)

    def make() -> DataLoader:
        sampler = RandomSampler(ds, num_samples=n, generator=g)
        return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                          collate_fn=None if args.mode == "decoded" else raw_collate)

    def epoch_dataloader(_: int) -> tuple[int, int]:
        images, nbytes = count_batches(make(), args.mode == "decoded")
        return images, nbytes if nbytes else int(sum(sizes) * images / len(sizes))

    def epoch_plain(e: int) -> tuple[int, int]:
        order = list(range(len(ds)))
        random.Random(e).shuffle(order)
        nbytes = 0
        for i in order[:n]:
            with open(ds.paths[i], "rb") as f:
                nbytes += len(f.read())
        return n, nbytes

    def warmup() -> None:
        for k, _ in enumerate(make()):
            if k + 1 >= args.warmup:
                break

    plain = args.variant == "plain"
    res = timed_epochs(args, [root], epoch_plain if plain else epoch_dataloader, None if plain else warmup)
    name = "files, plain read loop" if plain else f"files + DataLoader ({args.workers} workers)"
    emit(name, args.mode, f"torch {torch.__version__}", res)


if __name__ == "__main__":
    main()
