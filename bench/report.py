"""Editing a benchmark report (markdown, one "## " heading a section) one section at a time, so
a benchmark re-run alone leaves every other section as it was measured."""
from __future__ import annotations

import re


def replace_section(report: str, section: str) -> str:
    """`report` with the section headed like `section` (its "## " line up to the first colon, as
    "## Soak") replaced by `section`, in the same place; appended when `report` has none."""
    parts = [part.strip() for part in re.split(r"(?m)^(?=## )", report) if part.strip()]
    key = section.split(":", 1)[0].split("\n", 1)[0]
    at = next((i for i, part in enumerate(parts) if part.split(":", 1)[0].split("\n", 1)[0] == key), None)
    if at is None:
        parts.append(section.strip())
    else:
        parts[at] = section.strip()
    return "\n\n".join(parts) + "\n"
