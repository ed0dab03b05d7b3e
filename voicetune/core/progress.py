"""Progress bars and step headers, quiet when output is not a terminal (logs stay readable)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A tqdm bar on stderr; in non-interactive output it prints sparse updates instead of redraws."""
    interactive = sys.stderr.isatty()
    yield from tqdm(
        items,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2 if interactive else 10.0,
        disable=None if interactive else False,
    )


def say(message: str) -> None:
    print(message, flush=True)


def header(title: str) -> None:
    say(f"\n==> {title}")
