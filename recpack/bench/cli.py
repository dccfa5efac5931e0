"""The ``recpack bench`` click group; the commands live next to the code they drive."""

from __future__ import annotations

import click

from .dataset import dataset_command
from .device import device_command

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Measure storage devices and datasets: random vs sequential reads, disk-to-device images/s and the
    bottleneck stage."""


bench.add_command(device_command, "device")
bench.add_command(dataset_command, "dataset")
