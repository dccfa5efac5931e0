"""The ``recpack`` command: a thin click shell over the library.

- :mod:`recpack.cli.commands`: ``pack``, ``inspect``, ``verify``, ``convert``, ``demo``;
- :mod:`recpack.cli.bench`: the ``bench`` group (``device``, ``dataset``);
- :mod:`recpack.cli.options`: what the commands share (sizes, errors to exit codes).

Exit codes: 0 success; 1 a recpack error (message on stderr) or, for ``verify``, damage found; 2 bad usage
(click); 130 interrupted (a re-run of the same ``pack`` command resumes).
"""

from __future__ import annotations

import click

from .. import __version__
from .bench import bench
from .commands import convert, demo, inspect, pack, verify

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="recpack")
def cli() -> None:
    """Pack images into shuffled, sharded, checksummed record files and stream them to a GPU."""


for _command in (pack, inspect, verify, demo, convert, bench):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recpack")
