"""The loss curve of a run as an SVG file, drawn here: train (and eval) loss against steps, with axes, a grid and a
legend. Browsers, editors and the Hub show SVG as they show PNG, and drawing it takes a millisecond where importing
matplotlib took most of a second of every run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 700, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 20, 48  # margins around the plot area
COLORS = {"train loss": "#1f77b4", "eval loss": "#ff7f0e"}
Points = Sequence[tuple[float, float]]


def loss_points(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """{"train loss": [(step, loss), ...], "eval loss": [...]} from the Trainer's log history; empty series dropped."""
    series = {
        "train loss": [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry],
        "eval loss": [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry],
    }
    return {name: points for name, points in series.items() if points}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = high - low
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda candidate: abs(span / candidate - count))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _range(values: list[float], pad_fraction: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        return low - 1, high + 1
    pad = (high - low) * pad_fraction
    return low - pad, high + pad


def render_svg(series: dict[str, Points]) -> str:
    """The SVG document of ``series`` (name -> (step, loss) points, at least one point in all)."""
    steps = [float(x) for points in series.values() for x, _ in points]
    losses = [float(y) for points in series.values() for _, y in points]
    x_low, x_high = _range(steps, 0.0)
    y_low, y_high = _range(losses, 0.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(step: float) -> float:
        return LEFT + (step - x_low) / (x_high - x_low) * plot_w

    def y_of(loss: float) -> float:
        return TOP + (y_high - loss) / (y_high - y_low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    for tick in nice_ticks(x_low, x_high):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{tick:g}</text>')
    for tick in nice_ticks(y_low, y_high):
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">step</text>')
    parts.append(
        f'<text x="16" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.1f})">loss</text>'
    )
    for index, (name, points) in enumerate(series.items()):
        color = COLORS.get(name, "#2ca02c")
        coordinates = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="series" data-name="{escape(name)}" points="{coordinates}" fill="none" '
            f'stroke="{color}" stroke-width="1.5"/>'
        )
        if len(points) < 50:
            parts += [f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="2.5" fill="{color}"/>' for x, y in points]
        legend_y = TOP + 16 + 18 * index
        legend_x = LEFT + plot_w - 110
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 20}" y2="{legend_y - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{legend_x + 26}" y="{legend_y}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
