"""What the user hands the commands beyond plain strings: files, ``NAME=VALUE`` pairs and
numbers, checked here so that bad input is a usage (2) or file (3) error before any request."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from .errors import EXIT_FILE, EXIT_USAGE, ClientError


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror or exc}", EXIT_FILE) from None


def parse_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for text in items:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ClientError(f"bad --env {text!r}: expected NAME=VALUE", EXIT_USAGE)
        env[name] = value
    return env


def finite(text: str) -> float:
    """An argparse type: a float that JSON can carry (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
