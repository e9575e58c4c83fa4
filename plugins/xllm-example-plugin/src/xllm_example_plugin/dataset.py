"""The ``counting`` dataset: "Count from 3 to 7:" -> "3 4 5 6 7", generated offline from the seed.

It shows the whole dataset contract:

- ``get_data(config)`` (classmethod) returns ``(train, eval or None)``, iterables of JSON-serialisable raw samples
  that ``xllm download`` writes as JSON lines;
- ``get_sample(raw)`` turns one raw sample into a training sample, here ``{"text_parts": [prompt, target]}``
  (the completion collator puts collator_parts_separator between the parts and trains on the last one only);
- ``settings_model`` declares the extra settings the plugin reads from the config: each field becomes a
  ``--kebab-case`` flag of ``xllm download``/``xllm train``, an ``XLLM_<FIELD>`` variable, a ``.env`` entry and a
  config-file key, validated like xllm's own settings.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field


class CountingSettings(BaseModel):
    counting_samples: int = Field(200, ge=1, description="counting dataset: how many train samples to generate.")


def _samples(count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        start = rng.randint(1, 50)
        stop = start + rng.randint(2, 6)
        yield {"start": start, "stop": stop}


class CountingDataset:
    settings_model = CountingSettings

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def get_data(cls, config: Any) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
        rng = random.Random(config.seed)
        train_count = config.counting_samples
        # A tenth more as eval data: written when --eval-local-path-to-data is set.
        return _samples(train_count, rng), _samples(max(1, train_count // 10), rng)

    def get_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        numbers = " ".join(str(n) for n in range(raw["start"], raw["stop"] + 1))
        return {"text_parts": [f"Count from {raw['start']} to {raw['stop']}:", numbers]}
