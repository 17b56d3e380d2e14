"""Benchmark tables as pictures: each markdown table of a report (a label column, numeric columns)
becomes one PNG of small multiples, a horizontal bar chart per numeric column, since the columns'
units differ (frames, ms, MB) and one shared axis would flatten all but the largest."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# a number with an optional short unit: "2.42×", "100%", "0.465", "9,261", "626 MiB"
_NUMBER = re.compile(r"^\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*(?:×|%|[A-Za-z]{1,3})?\s*$")
# two numbers in one cell, as in "p50 / p95 ms" columns: "5346 / 9853"
_PAIR = re.compile(r"^\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*/\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*$")
_MISSING = {"", "-", "–", "n/a"}
# wider tables wrap onto more rows of panels, so that a chart stays readable at page width
PANELS_PER_ROW = 3


@dataclass(frozen=True)
class Table:
    title: str  # the heading above it
    header: list[str]
    rows: list[list[str]]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(markdown: str) -> list[Table]:
    """Every pipe table in `markdown` (a header line, a --- line, rows), titled by its heading."""
    found, title, lines = [], "", markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            title = line.lstrip("#").strip()
        elif (line.lstrip().startswith("|") and i + 1 < len(lines)
              and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]) and "-" in lines[i + 1]):
            header, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append(Table(title, header, rows))
            continue
        i += 1
    return found


def _number(cell: str) -> float | None:
    match = _NUMBER.match(cell)
    return float(match.group(1).replace(",", "")) if match else None


def numeric_columns(header: list[str], rows: list[list[str]]) -> list[tuple[str, list[float]]]:
    """(name, values) of each column whose cells are all numbers or missing (NaN), at least one a
    number; a column of "a / b" pairs becomes two, its header split at its own " / "."""
    out = []
    for j, name in enumerate(header[1:], start=1):
        cells = [row[j] if j < len(row) else "" for row in rows]
        present = [c for c in cells if c not in _MISSING]
        if not present:
            continue
        if all(_number(c) is not None for c in present):
            out.append((name, [math.nan if c in _MISSING else _number(c) for c in cells]))
        elif all(_PAIR.match(c) for c in present):
            # "capture p50 / p95 ms" -> "capture p50 ms" and "capture p95 ms"
            first, _, second = name.rpartition(" / ")
            prefix = first.rsplit(" ", 1)[0] if " " in first else ""
            unit = second.split(" ", 1)[1] if " " in second else ""
            names = (f"{first} {unit}".strip(), f"{prefix} {second}".strip())
            for k, label in enumerate(names, start=1):
                out.append((label, [math.nan if c in _MISSING else float(_PAIR.match(c).group(k).replace(",", ""))
                                    for c in cells]))
    return out


def table_chart(header: list[str], rows: list[list[str]], path: Path, title: str = "") -> Path | None:
    """One PNG for one table: its first column labels the bars, one panel per numeric column.
    None (nothing written) when no column is numeric."""
    columns = numeric_columns(header, rows)
    if not columns or not rows:
        return None
    labels = [row[0] for row in rows]
    across = min(PANELS_PER_ROW, len(columns))
    down = math.ceil(len(columns) / across)
    fig, axes = plt.subplots(down, across, figsize=(1.5 + 2.6 * across, down * (0.9 + 0.28 * len(rows))), dpi=100,
                             sharey=True, squeeze=False)
    y = list(range(len(rows)))[::-1]
    for ax, (name, values) in zip(axes.flat, columns):
        ax.barh(y, [0 if math.isnan(v) else v for v in values], color="#4c78a8")
        for yi, v in zip(y, values):
            if not math.isnan(v):
                ax.text(v, yi, f" {v:g}", va="center", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.margins(x=0.3)
        ax.spines[["top", "right", "bottom"]].set_visible(False)
    for ax in axes.flat[len(columns):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_yticks(y, labels, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def slug(heading: str) -> str:
    """The heading before any ":" or "(": what it measures, not this run's figures, so that a
    chart keeps its file name from one run to the next."""
    return re.sub(r"[^a-z0-9]+", "-", re.split(r"[:(]", heading)[0].lower()).strip("-") or "table"


def write_charts(markdown: str, folder: Path) -> list[Path]:
    """A chart per table of a report: folder/bench-<heading slug>[-<n>].png; returns those written."""
    written, seen = [], {}
    for table in tables(markdown):
        name = slug(table.title)
        seen[name] = seen.get(name, 0) + 1
        suffix = f"-{seen[name]}" if seen[name] > 1 else ""
        path = table_chart(table.header, table.rows, folder / f"bench-{name}{suffix}.png", table.title)
        if path is not None:
            written.append(path)
    return written
