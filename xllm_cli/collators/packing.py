"""Packing: several encoded samples per row of ``max_length``, isolated from each other.

Each sample keeps its own position ids (0, 1, ... restarting at every sample). When a batch has ``position_ids`` and
no 2-D attention mask, transformers 5 derives a block-diagonal causal mask from where the positions restart
(``masking_utils.find_packed_sequence_indices``, used by the eager, sdpa and flex paths; flash-attention 2 reads the
same boundaries as varlen lengths), so no token attends across samples. ``LMTrainer`` therefore drops the padding mask
of packed batches before the forward pass; the collator still returns it so non-pad tokens can be counted.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from xllm_cli.collators.base import IGNORE_INDEX


def plan_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Group sample indices into rows of at most ``max_length`` tokens (best fit, longest first).

    Best-fit decreasing fills rows to within a few percent of ``max_length`` on varied lengths, which is where
    packing's speed-up comes from. Row order is the trainer's to shuffle.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    # (space left, row index), sorted, so the tightest row that still fits is found by bisection.
    free: list[tuple[int, int]] = []
    for index in order:
        length = min(lengths[index], max_length)
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            space, row = free.pop(slot)
            rows[row].append(index)
            bisect.insort(free, (space - length, row))
        else:
            rows.append([index])
            bisect.insort(free, (max_length - length, len(rows) - 1))
    return rows


def pack_features(features: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Concatenate encoded samples into one row with restarting ``position_ids``.

    The first label of every sample is ignored: it would otherwise be the target of the previous sample's last
    token, a prediction across the sample boundary that unpacked training never makes.
    """
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for feature in features:
        ids = list(feature["input_ids"])
        row["input_ids"] += ids
        row["labels"] += [IGNORE_INDEX, *list(feature["labels"])[1:]]
        row["position_ids"] += list(range(len(ids)))
    return row
