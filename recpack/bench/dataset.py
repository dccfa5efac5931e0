"""Placeholder until the dataset benchmark lands (being written now)."""

from __future__ import annotations

import click


@click.command()
def dataset_command() -> None:
    """Not built yet."""
    raise click.ClickException("recpack bench dataset is not built yet")
