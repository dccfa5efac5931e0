"""``recpack.bench``: how fast can this disk feed this GPU, and what is in the way?

``recpack bench device PATH`` (storage under a path, random vs sequential reads):

* :mod:`.mountinfo` parses the kernel's mount tables; :mod:`.identify` follows the mount down to the disks;
* :mod:`.readers` runs the timed read tests; :mod:`.device` puts identification, tests and class together;
  :mod:`.device_report` prints it.

``recpack bench dataset IMAGE_DIR [PACKED]`` (raw files, packed records, decode, full Loader; the bottleneck):

* :mod:`.dataset_runs` holds the timed runs; :mod:`.dataset` packs if needed and assembles them;
  :mod:`.dataset_report` names the bottleneck and prints tables, JSON and plots.

Shared: :mod:`.cache` makes reads cold, :mod:`.stats` holds the latency statistics and device classes,
:mod:`.emulate` makes an emulated HDD or SATA SSD (root only) and :mod:`.emulated` runs either command inside
one (``--emulate``). The click commands are in :mod:`recpack.cli.bench`.
"""
