"""Rows, tables and JSON for the benchmarks: every script prints the same table and writes the same rows.

A row: {"name", "value", "unit", "target", "pass"}; target and pass are None for rows that only inform.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def row(name: str, value: float, unit: str, target: str | None = None, ok: bool | None = None) -> dict[str, Any]:
    return {"name": name, "value": round(float(value), 4), "unit": unit, "target": target, "pass": ok}


def machine() -> str:
    """One line describing where the numbers came from."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n{machine()}")
    width = max(len(r["name"]) for r in rows) + 2
    print("name".ljust(width) + "value".rjust(12) + "  unit".ljust(14) + "target".ljust(12) + "result")
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(
            r["name"].ljust(width)
            + f"{r['value']:12.4g}"
            + f"  {r['unit']}".ljust(14)
            + (r["target"] or "").ljust(12)
            + verdict
        )


def write_json(path: str | None, data: Any) -> None:
    """Write a benchmark's results (rows or any JSON value) to `path`, making its folder; nothing when no path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nwrote {path}")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (for the README)."""
    lines = ["| measurement | value | unit | target | result |", "|---|---:|---|---|---|"]
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        lines.append(f"| {r['name']} | {r['value']:.4g} | {r['unit']} | {r['target'] or ''} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python bench/report.py results.json: print it as Markdown
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
