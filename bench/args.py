"""Argument types the bench's command lines share."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A count of 1 or more, for ``argparse``: a count of 0 would measure nothing and divide by it."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value
