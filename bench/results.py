"""Where the benches leave their numbers: ``bench/results.json``, one section per bench, read by ``docs/generate.py``
to render the table of ``docs/performance.md``.

Each section holds the rows the bench printed (what was measured, its value, the baseline measured in the same run,
their ratio, the target and whether it was met), when, on which machine and under what load. A bench records only
when it ran to the end; ``--no-record`` (every bench has it) leaves the file alone.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().with_name("results.json")


def row(what: str, value: str, baseline: str = "", ratio: str = "", target: str = "", met: bool | None = None) -> dict:
    """One line of the table: every cell already formatted as the bench printed it."""
    return {"what": what, "value": value, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def machine() -> str:
    """The CPU model and core count, and the GPU when torch is already imported and sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    described = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        described += f", {torch.cuda.get_device_name(0)}"
    return described


def record(section: str, title: str, rows: list[dict], path: Path = RESULTS, **details: Any) -> None:
    """Replace ``section`` of the results file with these rows, stamped with the date, machine and load."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[section] = {
        "title": title,
        "measured": datetime.date.today().isoformat(),
        "machine": machine(),
        "load_average": round(os.getloadavg()[0], 1),
        "rows": rows,
        **details,
    }
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
