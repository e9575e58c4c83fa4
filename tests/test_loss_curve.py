"""The loss curve is drawn without matplotlib: an SVG whose lines go through the logged losses, in step order."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import pytest

from xllm_cli.training.loss_curve import HEIGHT, WIDTH, loss_points, nice_ticks, render_svg
from xllm_cli.training.outputs import plot_loss_curve

SVG = "{http://www.w3.org/2000/svg}"
LOG = [
    {"step": 1, "loss": 6.0, "learning_rate": 1e-3},
    {"step": 5, "loss": 4.0},
    {"step": 5, "eval_loss": 4.5},
    {"step": 10, "loss": 2.0},
    {"step": 10, "eval_loss": 3.0},
    {"step": 10, "train_runtime": 1.0},  # the Trainer's summary entry: no loss, no point
]


def lines(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ElementTree.fromstring(svg)
    return {
        line.get("data-name"): [tuple(map(float, point.split(","))) for point in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    }


def test_each_series_is_a_line_through_its_losses_in_step_order(tmp_path):
    path = plot_loss_curve(LOG, tmp_path / "loss_curve.svg")
    drawn = lines(path.read_text())
    assert set(drawn) == {"train loss", "eval loss"}
    train, evaluation = drawn["train loss"], drawn["eval loss"]
    assert len(train) == 3 and len(evaluation) == 2
    assert [x for x, _ in train] == sorted(x for x, _ in train)  # steps left to right
    assert train[0][1] < train[1][1] < train[2][1]  # falling loss: lower on the page is larger y
    # Same step, higher loss: the eval point sits above the train point.
    assert evaluation[-1][0] == train[-1][0] and evaluation[-1][1] < train[-1][1]
    for x, y in train + evaluation:
        assert 0 <= x <= WIDTH and 0 <= y <= HEIGHT
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was left behind"


def test_one_logged_step_is_drawn_and_nothing_logged_writes_nothing(tmp_path):
    assert len(lines(render_svg(loss_points([{"step": 1, "loss": 6.25}])))["train loss"]) == 1
    assert plot_loss_curve([{"step": 3, "train_runtime": 1.0}], tmp_path / "none.svg") is None
    assert not (tmp_path / "none.svg").exists()


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (1.0, 118.0), (0.31, 5.2), (2.5e-4, 3e-4), (-3.0, 7.0)])
def test_ticks_are_round_and_cover_the_range(low, high):
    ticks = nice_ticks(low, high)
    assert 3 <= len(ticks) <= 8
    assert all(low - 1e-12 <= tick <= high + 1e-12 for tick in ticks)
    steps = {round(b - a, 12) for a, b in zip(ticks[:-1], ticks[1:], strict=True)}
    assert len(steps) == 1
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
