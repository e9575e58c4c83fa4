"""Sizes as people write them (``10GB``, ``80GiB``, ``512MB``), in bytes: one parser for --max-shard-size and
--device-memory."""

from __future__ import annotations

import re

GB = 10**9
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}
UNITS["tib"] = 2**40
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int, unit_required: bool = True) -> int:
    """Bytes in ``24GB`` (10^9), ``80GiB`` (2^30), ``512MB``, ``1.5TB``; a bare number is bytes only when
    ``unit_required`` is off (a bare 24 is more likely 24 GB than 24 bytes). ``ValueError`` names the accepted forms."""
    match = _SIZE.match(str(text))
    unit = match.group("unit").lower() if match else None
    if match is not None and not unit and not unit_required:
        unit = "b"
    if match is None or unit not in UNITS:
        raise ValueError(f"'{text}' is not a size; write it like 24GB, 80GiB or 512MB")
    size = int(float(match.group("number")) * UNITS[unit])
    if size <= 0:
        raise ValueError(f"'{text}' is not a size above zero")
    return size
