"""``recpack.bench``: how fast can this disk feed this GPU, and what is in the way?

* :mod:`recpack.bench.device` identifies the storage under a path and measures random vs sequential reads
  on it (``recpack bench device PATH``);
* :mod:`recpack.bench.dataset` times raw files, packed records, decode and the full Loader on a dataset and
  names the bottleneck stage (``recpack bench dataset IMAGE_DIR [PACKED]``);
* :mod:`recpack.bench.emulated` runs either inside an emulated HDD or SATA SSD (``--emulate``, root only).
"""
