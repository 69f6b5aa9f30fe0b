"""Byte sizes as people write them ("15 GB", "15GiB", "15360MiB") and as tables print them."""

from __future__ import annotations

import re

from trainer.errors import ConfigError

_UNITS = {"": 1, "b": 1,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int) -> int:
    """Bytes from a size string. GB/MB are decimal (10^9), GiB/MiB binary (2^30): a T4 has 15360 MiB = 15 GiB."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"memory budget {text!r}", ["must be a positive number of bytes"])
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"memory budget {text!r}", [
            "write a number and a unit, e.g. '15GiB', '15 GB' or '15360MiB' "
            f"(units: {', '.join(u for u in ('B', 'KB', 'MB', 'GB', 'TB', 'KiB', 'MiB', 'GiB', 'TiB'))}; "
            "GB = 10^9 bytes, GiB = 2^30)"])
    size = float(match.group(1)) * _UNITS[unit]
    if size <= 0:
        raise ConfigError(f"memory budget {text!r}", ["must be larger than zero"])
    return int(size)


def format_bytes(size: float) -> str:
    """Binary units with 2 decimals (GiB for anything from 1 GiB up)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"
