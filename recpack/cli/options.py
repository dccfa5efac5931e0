"""What the click commands share: size parsing, the SIZE parameter type, and turning errors into exit codes."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ..errors import RecpackError

__all__ = ["SizeType", "exit_on_errors", "parse_size"]

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """'256MB' -> 256000000, '1GiB' -> 1073741824, '4096' -> 4096."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size; use e.g. 256MB, 1GiB or a number of bytes")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"size {text!r} must be at least 1 byte")
    return value


class SizeType(click.ParamType):  # type: ignore[type-arg]
    """A size option: ``256MiB``, ``1GB``, ``110KiB`` or a number of bytes (:func:`parse_size`)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def exit_on_errors(interrupted: str = "interrupted") -> Callable[[F], F]:
    """Decorator: a RecpackError becomes ``error: ...`` on stderr and exit code 1; Ctrl-C prints
    ``interrupted`` (what happened to the work so far) and exits 130."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except RecpackError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
            except KeyboardInterrupt:
                click.echo(f"\n{interrupted}", err=True)
                sys.exit(130)

        return wrapper  # type: ignore[return-value]

    return decorate
