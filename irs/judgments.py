"""Relevance judgments for qualitative evaluation: stored durably, scored, exported and imported.

A judgment says that, for a query, an image (by content hash) is or is not relevant, who said so, when,
and under which index and search settings the result was shown. Judgments live in
`judgments.sqlite` in the database folder, apart from the index, so rebuilding an index keeps them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from irs.evaluate import average_precision

FIELDS = ("query", "sha256", "path", "relevant", "annotator", "at", "settings")


@dataclass(frozen=True)
class Judgment:
    query: str
    sha256: str
    path: str
    relevant: bool
    annotator: str = ""
    at: float = field(default_factory=time.time)
    settings: str = "{}"  # JSON of the settings the result was shown with


class Judgments:
    """The judgment store of one database."""

    def __init__(self, db_dir: str | Path) -> None:
        Path(db_dir).mkdir(parents=True, exist_ok=True)
        self.sql = sqlite3.connect(Path(db_dir) / "judgments.sqlite", check_same_thread=False, isolation_level=None)
        self.sql.execute(
            "CREATE TABLE IF NOT EXISTS judgments (query TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT, "
            "relevant INTEGER NOT NULL, annotator TEXT NOT NULL, at REAL NOT NULL, settings TEXT, "
            "PRIMARY KEY (query, sha256, annotator))"
        )

    def record(self, judgments: Iterable[Judgment]) -> int:
        """Save judgments; a later judgment by the same annotator replaces the earlier one."""
        rows = [(j.query, j.sha256, j.path, int(j.relevant), j.annotator, j.at, j.settings) for j in judgments]
        self.sql.execute("BEGIN")
        self.sql.executemany("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.sql.execute("COMMIT")
        return len(rows)

    def all(self) -> list[Judgment]:
        rows = self.sql.execute(f"SELECT {', '.join(FIELDS)} FROM judgments ORDER BY query, at").fetchall()
        return [Judgment(q, s, p, bool(r), a, at, st) for q, s, p, r, a, at, st in rows]

    def queries(self) -> list[str]:
        return [r[0] for r in self.sql.execute("SELECT DISTINCT query FROM judgments ORDER BY query")]

    def for_query(self, query: str) -> dict[str, bool]:
        """sha256 -> relevant, the latest judgment of any annotator winning."""
        rows = self.sql.execute("SELECT sha256, relevant FROM judgments WHERE query=? ORDER BY at", (query,)).fetchall()
        return {sha: bool(rel) for sha, rel in rows}

    # export and import ------------------------------------------------------------------------
    def export_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        for j in self.all():
            writer.writerow(asdict(j))
        return out.getvalue()

    def export_jsonl(self) -> str:
        return "".join(json.dumps(asdict(j)) + "\n" for j in self.all())

    def import_text(self, text: str, fmt: str) -> int:
        """Import CSV or JSONL as exported; raises ValueError naming the line and field at fault.

        Nothing is saved unless every record is good, so a bad file can be fixed and imported again."""
        if fmt == "csv":
            records = _csv_records(text)
        elif fmt == "jsonl":
            records = _jsonl_records(text)
        else:
            raise ValueError(f"unknown format {fmt!r}: csv or jsonl")
        return self.record([_judgment(rec, line) for line, rec in records])

    def close(self) -> None:
        self.sql.close()


REQUIRED = ("query", "sha256", "relevant")


def _csv_records(text: str) -> list[tuple[int, dict[str, object]]]:
    """(line, row) of a CSV with a header naming at least the required fields."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    lacking = [f for f in REQUIRED if f not in header]
    if header and lacking:  # a file without the header would otherwise import nothing, silently
        raise ValueError(f"line 1: the header lacks {', '.join(lacking)} (expected {','.join(FIELDS)})")
    return [(reader.line_num, row) for row in reader]


def _jsonl_records(text: str) -> list[tuple[int, dict[str, object]]]:
    """(line, object) of every non-blank line of JSONL."""
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as err:
            raise ValueError(f"line {n}: not JSON ({err})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"line {n}: not a JSON object with fields {', '.join(FIELDS)}")
        records.append((n, rec))
    return records


def _judgment(rec: dict[str, object], line: int) -> Judgment:
    """One imported record as a Judgment, or ValueError naming its line and the field at fault."""
    missing = [f for f in REQUIRED if rec.get(f) in (None, "")]
    if missing:
        raise ValueError(f"line {line}: missing {', '.join(missing)}")
    relevant = rec["relevant"]
    if isinstance(relevant, str):
        relevant = {"true": True, "1": True, "false": False, "0": False}.get(relevant.strip().lower(), relevant)
    elif isinstance(relevant, int) and relevant in (0, 1):  # bool is an int too
        relevant = bool(relevant)
    if not isinstance(relevant, bool):
        raise ValueError(f"line {line}: field 'relevant' is {relevant!r}, not true/false")
    at = rec.get("at")
    try:
        when = time.time() if at in (None, "") else float(str(at))
    except ValueError:
        when = math.nan
    if not math.isfinite(when):  # sqlite would store NaN as NULL and refuse the row
        raise ValueError(f"line {line}: field 'at' is {at!r}, not a time in seconds since 1970")
    return Judgment(
        str(rec["query"]),
        str(rec["sha256"]),
        str(rec.get("path") or ""),
        relevant,
        str(rec.get("annotator") or ""),
        when,
        str(rec.get("settings") or "{}"),
    )


def precision_at(ranked: list[str], judged: dict[str, bool], k: int) -> float:
    """Share of the top k judged relevant (unjudged counts as not relevant)."""
    top = ranked[:k]
    return sum(judged.get(sha, False) for sha in top) / k if k else 0.0


def judged_ap(ranked: list[str], judged: dict[str, bool]) -> float:
    """Average precision of a ranking against the images judged relevant."""
    relevant = {sha for sha, rel in judged.items() if rel}
    return average_precision(ranked, relevant, depth=max(len(ranked), 1))


def compare(
    search: Callable[[str, object], list[str]], store: Judgments, settings_a: object, settings_b: object, k: int
) -> list[dict[str, float | str]]:
    """P@k and AP of two settings on every judged query; `search(query, settings)` returns ranked sha256s."""
    rows = []
    for query in store.queries():
        judged = store.for_query(query)
        a, b = search(query, settings_a), search(query, settings_b)
        rows.append(
            {
                "query": query,
                "judged": len(judged),
                "P@k A": precision_at(a, judged, k),
                "P@k B": precision_at(b, judged, k),
                "AP A": judged_ap(a, judged),
                "AP B": judged_ap(b, judged),
            }
        )
    return rows
