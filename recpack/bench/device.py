"""Placeholder until the device benchmark lands (being written now)."""

from __future__ import annotations

import click


@click.command()
def device_command() -> None:
    """Not built yet."""
    raise click.ClickException("recpack bench device is not built yet")
