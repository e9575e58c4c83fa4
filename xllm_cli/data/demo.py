"""The demo dataset: short question/answer pairs written for xllm, shipped in the package so the demo and the tests
need no network. Small on purpose: it exists to show that the pipeline runs and that the loss falls."""

from __future__ import annotations

from xllm_cli.data.general import PreparedSampleDataset
from xllm_cli.settings.config import XllmConfig

_FACTS = [
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey and wax."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Where do fish live?", "Fish live in water, in rivers, lakes and seas."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("How many hours are in a day?", "There are twenty four hours in a day."),
    ("What do plants need to grow?", "Plants need light, water and air to grow."),
    ("What is ice?", "Ice is frozen water."),
    ("Which animal is known for its long neck?", "The giraffe is known for its long neck."),
    ("What is the freezing point of water?", "Water freezes at zero degrees Celsius."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("What gives us light during the day?", "The sun gives us light during the day."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("What is a triangle?", "A triangle is a shape with three sides."),
    ("What do cows drink?", "Cows drink water."),
]

_ARITHMETIC = [(a, b) for a in range(1, 6) for b in range(1, 5)]


def demo_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs: the facts above plus small sums, 40 in all."""
    sums = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a, b in _ARITHMETIC]
    return _FACTS + sums


def demo_texts() -> list[str]:
    return [f"Question: {q}\nAnswer: {a}" for q, a in demo_pairs()]


def demo_records() -> list[dict]:
    """Raw samples as the ``demo`` dataset writes them: a prompt and its answer as text parts."""
    return [{"text_parts": [f"Question: {q}\nAnswer:", f" {a}"]} for q, a in demo_pairs()]


class DemoDataset(PreparedSampleDataset):
    """The ``demo`` key. With an eval path set, the last eight pairs become eval data; otherwise all of it trains."""

    EVAL_SIZE = 8

    @classmethod
    def get_data(cls, config: XllmConfig) -> tuple[list[dict], list[dict] | None]:
        records = demo_records()
        if config.eval_local_path_to_data:
            return records[: -cls.EVAL_SIZE], records[-cls.EVAL_SIZE :]
        return records, None
