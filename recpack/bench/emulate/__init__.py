"""Emulate a slow storage device (a hard disk, a SATA SSD) on any Linux box, for benchmarks.

A sparse file on the real disk is formatted, attached to a loop device and mounted; a block-I/O cgroup caps
reads from that loop device at the profile's IOPS and bytes/s. Only processes inside the cgroup are
throttled, so data is copied in at full speed and the benchmark is then run inside::

    with emulated_device("hdd", size=2 << 30) as dev:
        data = dev.copy_in("/data/imagenet-packed")           # unthrottled; fsync; drop caches
        dev.run([sys.executable, "bench.py", str(data)])       # throttled, cold page cache
        with dev.throttled():                                  # or: this process, for a while
            my_benchmark(data)

The parts, each its own module:

- :mod:`.profiles`: :class:`Profile` and the built-in ``PROFILES`` (``hdd``, ``sata-ssd``);
- :mod:`.cgroup`: where throttling is available, the throttle settings, and how the throttle counts
  requests (which sets the sequential ceiling);
- :mod:`.host`: what the machine must provide (:func:`check_environment`), the system tools;
- :mod:`.device`: :class:`EmulatedDevice` and :func:`emulated_device`, setup and guaranteed teardown;
- :mod:`.measure`: :func:`measure`, what the device really delivers.

Everything needs root; :func:`check_environment` says whether this box can do it and, if not, why (tests
and benchmarks skip with that reason).
"""

from __future__ import annotations

from .cgroup import METHOD_V1, METHOD_V2, find_cgroup, throttle_settings, wrapper_argv
from .device import EmulatedDevice, emulated_device
from .host import check_environment, device_number, require_root
from .measure import format_measurement, measure
from .profiles import PROFILES, MiB, Profile, get_profile

__all__ = [
    "Profile",
    "PROFILES",
    "METHOD_V1",
    "METHOD_V2",
    "EmulatedDevice",
    "emulated_device",
    "get_profile",
    "require_root",
    "check_environment",
    "find_cgroup",
    "device_number",
    "throttle_settings",
    "wrapper_argv",
    "measure",
    "format_measurement",
    "MiB",
]
