"""Relevance judgments for qualitative evaluation: stored durably, scored, compared fairly, exported and imported.

A judgment says that, for a query, an image (by content hash) is or is not relevant and, separately, whether
the segment the search matched in it is the right object; who said so, when, and under which index and search
settings (every weight and pool) the result was shown. Judgments live in `judgments.sqlite` in the database
folder, apart from the index, so rebuilding an index keeps them; saved search presets live there too.

The file has a schema version (`PRAGMA user_version`); a file written by an older irs is upgraded in place, one
step at a time (`UPGRADES`), and one written by a newer irs is refused.

Comparing settings is done as TREC does: for each judged query the top k of every setting are pooled, and the
pooled results nobody has judged yet are counted and listed, never silently taken for not relevant.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irs.evaluate import MODES, average_precision
from irs.records import SearchResult
from irs.settings import Settings

FIELDS = ("query", "sha256", "path", "relevant", "annotator", "at", "settings", "segment", "right_object")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Judgment:
    query: str
    sha256: str
    path: str
    relevant: bool
    annotator: str = ""
    at: float = field(default_factory=time.time)
    settings: str = "{}"  # JSON of the settings the result was shown with (settings_json)
    segment: int | None = None  # index of the matched segment judged below; None: no segment judged
    right_object: bool | None = None  # is that segment the object the query asks for? None: not judged


@dataclass(frozen=True)
class Verdict:
    """What is known about one image for one query: the latest image judgment of any annotator, and the
    latest segment judgment (which may come from an earlier row, as an image re-judged keeps its segment's)."""

    relevant: bool
    segment: int | None = None
    right_object: bool | None = None


@dataclass(frozen=True)
class SearchSettings:
    """Every search weight and candidate pool: what a preset holds and what each judgment records."""

    weight_image: float
    weight_segment: float
    weight_position: float
    weight_relation: float
    weight_negative: float
    image_pool: int
    segment_pool: int
    weight_all: float = 0.0  # after the pools: presets saved before it existed load as plain means

    @classmethod
    def of(cls, settings: Settings) -> SearchSettings:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    def apply(self, settings: Settings) -> Settings:
        """`settings` searching with these weights and pools."""
        return settings.replace(**asdict(self))

    def replace(self, **changes: float) -> SearchSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Preset:
    """Named search settings: one of evaluate's MODES (built in, read-only) or one an annotator saved."""

    name: str
    settings: SearchSettings
    builtin: bool = False


def settings_json(settings: Settings) -> str:
    """What a judgment records of the settings its result was shown with: the index's fingerprint (which
    models and segmenter made the ranking) and every weight and pool."""
    return json.dumps({**settings.index_fingerprint(), **asdict(SearchSettings.of(settings))}, sort_keys=True)


class JudgmentsError(RuntimeError):
    """The judgment file cannot be used (written by a newer irs)."""


def _upgrade_to_1(sql: sqlite3.Connection) -> None:
    """Segment judgments (nullable: older judgments judged only the image) and saved presets."""
    sql.execute("ALTER TABLE judgments ADD COLUMN segment INTEGER")
    sql.execute("ALTER TABLE judgments ADD COLUMN right_object INTEGER")
    sql.execute(PRESETS)


UPGRADES: dict[int, Callable[[sqlite3.Connection], None]] = {1: _upgrade_to_1}  # version -> step from the one before
JUDGMENTS = (
    "CREATE TABLE judgments (query TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT, relevant INTEGER NOT NULL, "
    "annotator TEXT NOT NULL, at REAL NOT NULL, settings TEXT, segment INTEGER, right_object INTEGER, "
    "PRIMARY KEY (query, sha256, annotator))"
)
PRESETS = "CREATE TABLE presets (name TEXT PRIMARY KEY, settings TEXT NOT NULL, at REAL NOT NULL)"


class Judgments:
    """The judgment store of one database."""

    def __init__(self, db_dir: str | Path) -> None:
        Path(db_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(db_dir) / "judgments.sqlite"
        self.sql = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._migrate()

    def _migrate(self) -> None:
        """Create the tables, or bring a file written by an older irs up to SCHEMA_VERSION in place."""
        self.sql.execute("BEGIN IMMEDIATE")
        try:
            version = self.sql.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JudgmentsError(
                    f"{self.path}: written by a newer irs (judgments schema {version}; this irs reads "
                    f"{SCHEMA_VERSION} and older). Upgrade irs to use it"
                )
            exists = self.sql.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='judgments'")
            if exists.fetchone() is None:
                self.sql.execute(JUDGMENTS)
                self.sql.execute(PRESETS)
            else:  # version 0 is the first format: no segment columns, no presets
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    UPGRADES[step](self.sql)
            self.sql.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self.sql.execute("ROLLBACK")
            raise
        self.sql.execute("COMMIT")

    def record(self, judgments: Iterable[Judgment]) -> int:
        """Save judgments; a later judgment by the same annotator replaces the earlier one."""
        rows = [
            (j.query, j.sha256, j.path, int(j.relevant), j.annotator, j.at, j.settings, j.segment, _int(j.right_object))
            for j in judgments
        ]
        self.sql.execute("BEGIN")
        self.sql.executemany(f"INSERT OR REPLACE INTO judgments ({', '.join(FIELDS)}) VALUES ({_marks(FIELDS)})", rows)
        self.sql.execute("COMMIT")
        return len(rows)

    def judge_image(self, shown: Shown, annotator: str, relevant: bool) -> Judgment:
        """Record an annotator's image judgment of a shown result, keeping their segment judgment of it."""
        own = self.get(shown.query, shown.result.sha256, annotator)
        segment, right = (own.segment, own.right_object) if own is not None else (None, None)
        judgment = Judgment(
            shown.query,
            shown.result.sha256,
            shown.result.path,
            relevant,
            annotator,
            time.time(),
            shown.settings,
            segment,
            right,
        )
        self.record([judgment])
        return judgment

    def judge_segment(self, shown: Shown, annotator: str, right: bool) -> Judgment | None:
        """Record whether the result's matched segment is the object asked for, beside the annotator's image
        judgment; None, and nothing recorded, while they have not judged the image (a row needs its relevance)."""
        own = self.get(shown.query, shown.result.sha256, annotator)
        segment = matched_segment(shown.result)
        if own is None or segment is None:
            return None
        judgment = dataclasses.replace(
            own, at=time.time(), settings=shown.settings, segment=segment, right_object=right
        )
        self.record([judgment])
        return judgment

    def mark_rest_not_relevant(self, items: Iterable[Shown], annotator: str) -> int:
        """Judge every item that nobody has judged yet not relevant; how many that was."""
        verdicts: dict[str, dict[str, Verdict]] = {}
        rest = []
        for item in items:
            if item.query not in verdicts:
                verdicts[item.query] = self.verdicts(item.query)
            if item.result.sha256 not in verdicts[item.query]:
                verdicts[item.query][item.result.sha256] = Verdict(False)  # a result listed twice is judged once
                rest.append(
                    Judgment(
                        item.query, item.result.sha256, item.result.path, False, annotator, time.time(), item.settings
                    )
                )
        return self.record(rest)

    def all(self) -> list[Judgment]:
        rows = self.sql.execute(f"SELECT {', '.join(FIELDS)} FROM judgments ORDER BY query, at").fetchall()
        return [_row(row) for row in rows]

    def get(self, query: str, sha256: str, annotator: str) -> Judgment | None:
        """One annotator's judgment of one image for one query."""
        row = self.sql.execute(
            f"SELECT {', '.join(FIELDS)} FROM judgments WHERE query=? AND sha256=? AND annotator=?",
            (query, sha256, annotator),
        ).fetchone()
        return None if row is None else _row(row)

    def queries(self) -> list[str]:
        return [r[0] for r in self.sql.execute("SELECT DISTINCT query FROM judgments ORDER BY query")]

    def for_query(self, query: str) -> dict[str, bool]:
        """sha256 -> relevant, the latest judgment of any annotator winning."""
        return {sha: v.relevant for sha, v in self.verdicts(query).items()}

    def verdicts(self, query: str) -> dict[str, Verdict]:
        """sha256 -> Verdict: the latest image judgment of any annotator, and the latest segment judgment."""
        rows = self.sql.execute(
            "SELECT sha256, relevant, segment, right_object FROM judgments WHERE query=? ORDER BY at", (query,)
        ).fetchall()
        found: dict[str, Verdict] = {}
        for sha, relevant, segment, right in rows:
            before = found.get(sha)
            if right is None and before is not None:  # an image-only judgment keeps the segment's verdict
                segment, right = before.segment, before.right_object
            found[sha] = Verdict(bool(relevant), segment, None if right is None else bool(right))
        return found

    def version(self) -> tuple[int, float]:
        """Changes whenever a judgment is recorded (count and latest time): a cheap key for caches."""
        count, latest = self.sql.execute("SELECT COUNT(*), COALESCE(MAX(at), 0) FROM judgments").fetchone()
        return int(count), float(latest)

    # presets ----------------------------------------------------------------------------------
    def presets(self, base: SearchSettings) -> list[Preset]:
        """The built-in modes (applied to `base`, the index's own settings) then the saved presets by name."""
        builtin = [Preset(name, base.replace(**mode), True) for name, mode in MODES.items()]
        rows = self.sql.execute("SELECT name, settings FROM presets ORDER BY name").fetchall()
        saved = []
        for name, text in rows:
            stored = json.loads(text)
            known = {f.name for f in dataclasses.fields(SearchSettings)}
            # a field missing from an older preset takes the index's value rather than failing
            saved.append(Preset(name, base.replace(**{k: v for k, v in stored.items() if k in known})))
        return builtin + saved

    def save_preset(self, name: str, settings: SearchSettings) -> None:
        """Save (or overwrite) a named preset; the built-in names are refused."""
        name = name.strip()
        if not name:
            raise ValueError("a preset needs a name")
        if name in MODES:
            raise ValueError(f"{name!r} is a built-in preset: choose another name")
        self.sql.execute(
            "INSERT OR REPLACE INTO presets VALUES (?, ?, ?)", (name, json.dumps(asdict(settings)), time.time())
        )

    # export and import ------------------------------------------------------------------------
    def export_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        for j in self.all():
            writer.writerow(asdict(j))  # None is written as an empty field
        return out.getvalue()

    def export_jsonl(self) -> str:
        return "".join(json.dumps(asdict(j)) + "\n" for j in self.all())

    def import_text(self, text: str, fmt: str) -> int:
        """Import CSV or JSONL as exported (by this irs or an older one); raises ValueError naming the line and
        field at fault.

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


def _marks(names: Sequence[str]) -> str:
    return ", ".join("?" * len(names))


def _int(flag: bool | None) -> int | None:
    return None if flag is None else int(flag)


def _row(row: tuple[Any, ...]) -> Judgment:
    query, sha, path, relevant, annotator, at, shown_with, segment, right = row
    right_object = None if right is None else bool(right)
    return Judgment(query, sha, path or "", bool(relevant), annotator, at, shown_with or "{}", segment, right_object)


REQUIRED = ("query", "sha256", "relevant")
FLAGS = {"true": True, "1": True, "false": False, "0": False}


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


def _flag(value: object) -> bool | None:
    """true/false/1/0 (any case) as a bool; None when it is none of them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return FLAGS.get(value.strip().lower())
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def _judgment(rec: dict[str, object], line: int) -> Judgment:
    """One imported record as a Judgment, or ValueError naming its line and the field at fault."""
    missing = [f for f in REQUIRED if rec.get(f) in (None, "")]
    if missing:
        raise ValueError(f"line {line}: missing {', '.join(missing)}")
    relevant = _flag(rec["relevant"])
    if relevant is None:
        raise ValueError(f"line {line}: field 'relevant' is {rec['relevant']!r}, not true/false")
    at = rec.get("at")
    try:
        when = time.time() if at in (None, "") else float(str(at))
    except ValueError:
        when = math.nan
    if not math.isfinite(when):  # sqlite would store NaN as NULL and refuse the row
        raise ValueError(f"line {line}: field 'at' is {at!r}, not a time in seconds since 1970")
    # files from before segment judgments have neither field: both stay None
    right_value, segment_value = rec.get("right_object"), rec.get("segment")
    right = None if right_value in (None, "") else _flag(right_value)
    if right_value not in (None, "") and right is None:
        raise ValueError(f"line {line}: field 'right_object' is {right_value!r}, not true/false or empty")
    segment: int | None = None
    if segment_value not in (None, ""):
        try:
            segment = int(str(segment_value))
        except ValueError:
            segment = -1
        if segment < 0:
            raise ValueError(f"line {line}: field 'segment' is {segment_value!r}, not a segment index")
    if right is not None and segment is None:  # a verdict on a segment is worthless without which segment
        raise ValueError(f"line {line}: field 'right_object' is set but 'segment' is missing")
    return Judgment(
        str(rec["query"]),
        str(rec["sha256"]),
        str(rec.get("path") or ""),
        relevant,
        str(rec.get("annotator") or ""),
        when,
        str(rec.get("settings") or "{}"),
        segment,
        right,
    )


# metrics ------------------------------------------------------------------------------------------
def precision_at(ranked: list[str], judged: Mapping[str, bool], k: int) -> float:
    """Share of the top k judged relevant (unjudged counts as not relevant: report how many were unjudged)."""
    top = ranked[:k]
    return sum(judged.get(sha, False) for sha in top) / k if k else 0.0


def judged_ap(ranked: list[str], judged: Mapping[str, bool]) -> float:
    """Average precision of a ranking against the images judged relevant."""
    relevant = {sha for sha, rel in judged.items() if rel}
    return average_precision(ranked, relevant, depth=max(len(ranked), 1))


@dataclass(frozen=True)
class Localisation:
    """Of the results judged relevant whose matched segment was judged, how many matched the right object."""

    right: int
    judged: int

    @property
    def accuracy(self) -> float | None:
        """None when no segment was judged: no number rather than a made-up 0 or 1."""
        return self.right / self.judged if self.judged else None


def matched_segment(result: SearchResult) -> int | None:
    """The segment a result's segment judgment is about: the first phrase's match, the one drawn as ①."""
    return None if result.segment is None else result.segment.index


def awaits_segment(judgment: Judgment, result: SearchResult) -> bool:
    """Whether a relevant image's matched segment still lacks this judgment's verdict (the page waits for it)."""
    matched = matched_segment(result)
    return judgment.relevant and matched is not None and (judgment.right_object is None or judgment.segment != matched)


def localisation(results: Sequence[SearchResult], verdicts: Mapping[str, Verdict], k: int) -> Localisation:
    """Localisation over the top k: a judged segment counts only for a ranking that matched that very segment
    (another setting may match another segment of the same image, which is then unjudged for it)."""
    right = judged = 0
    for result in results[:k]:
        verdict = verdicts.get(result.sha256)
        if verdict is None or not verdict.relevant or verdict.right_object is None:
            continue
        if verdict.segment is not None and verdict.segment == matched_segment(result):
            judged += 1
            right += verdict.right_object
    return Localisation(right, judged)


@dataclass(frozen=True)
class Score:
    """One ranking's scores for one query, and how many of its top k nobody has judged."""

    precision: float  # P@k, unjudged counted as not relevant
    ap: float
    localisation: Localisation
    unjudged: int


def score(results: Sequence[SearchResult], verdicts: Mapping[str, Verdict], k: int) -> Score:
    """P@k, AP and localisation of one ranking against the verdicts of its query."""
    relevance = {sha: v.relevant for sha, v in verdicts.items()}
    top = [r.sha256 for r in results[:k]]
    return Score(
        precision_at(top, relevance, k),
        judged_ap(top, relevance),
        localisation(results, verdicts, k),
        sum(sha not in verdicts for sha in top),
    )


# fair comparison ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """A result as an annotator sees it: its query, and the named settings it was ranked under (JSON kept)."""

    query: str
    result: SearchResult
    setting: str
    settings: str = "{}"  # settings_json of that setting, recorded with the judgment
    rank: int = 0  # 1-based place in that setting's ranking


@dataclass
class Rankings:
    """The top k of every named setting on every query: the searches a comparison needs, run once; scoring
    them again as judgments arrive is cheap."""

    k: int
    settings: dict[str, str]  # name -> settings_json, in the order compared
    ranked: dict[str, dict[str, list[SearchResult]]]  # query -> name -> results, best first

    @property
    def names(self) -> list[str]:
        return list(self.settings)


def rank(
    search: Callable[[str, Settings], list[SearchResult]],
    queries: Iterable[str],
    settings: Mapping[str, Settings],
    k: int,
) -> Rankings:
    """Search every query under every named setting (`search(query, settings)` returns the top k)."""
    ranked = {q: {name: search(q, s)[:k] for name, s in settings.items()} for q in queries}
    return Rankings(k, {name: settings_json(s) for name, s in settings.items()}, ranked)


@dataclass(frozen=True)
class CompareRow:
    """One query under every setting compared: the pool (the union of their top k) and its judged share."""

    query: str
    pooled: int  # distinct images in the union of the top k of every setting
    unjudged: int  # of those, images nobody has judged
    segments_unjudged: int  # of those judged relevant, images whose segment nobody has judged
    scores: dict[str, Score]  # setting name -> its scores

    @property
    def judged(self) -> int:
        return self.pooled - self.unjudged


@dataclass
class Comparison:
    """Settings compared on the judged queries, TREC style: what remains unjudged in the pools is counted and
    listed (`to_judge`), so a difference between settings is never made by unjudged results."""

    k: int
    names: list[str]
    rows: list[CompareRow]
    to_judge: list[Shown]  # pooled results whose image, or relevant image's segment, nobody has judged

    @property
    def unjudged(self) -> int:
        return sum(row.unjudged for row in self.rows)

    @property
    def segments_unjudged(self) -> int:
        return sum(row.segments_unjudged for row in self.rows)

    def mean(self, name: str) -> Score:
        """The mean of a setting's scores over the queries; localisation pooled over all judged segments."""
        scores = [row.scores[name] for row in self.rows]
        n = len(scores) or 1
        return Score(
            sum(s.precision for s in scores) / n,
            sum(s.ap for s in scores) / n,
            Localisation(sum(s.localisation.right for s in scores), sum(s.localisation.judged for s in scores)),
            sum(s.unjudged for s in scores),
        )


def compare(rankings: Rankings, store: Judgments) -> Comparison:
    """Score every setting on every query of `rankings` against the stored judgments, pooling their top k."""
    rows, to_judge = [], []
    for query, by_name in rankings.ranked.items():
        verdicts = store.verdicts(query)
        pool: dict[str, Shown] = {}  # sha256 -> the first setting to rank it (its matched segment is shown)
        segments_wanted: dict[str, Shown] = {}
        for name, results in by_name.items():
            for n, result in enumerate(results[: rankings.k], 1):
                shown = Shown(query, result, name, rankings.settings[name], n)
                pool.setdefault(result.sha256, shown)
                verdict = verdicts.get(result.sha256)
                if verdict is not None and verdict.relevant and verdict.right_object is None:
                    if matched_segment(result) is not None:
                        segments_wanted.setdefault(result.sha256, shown)
        unjudged = [shown for sha, shown in pool.items() if sha not in verdicts]
        to_judge += unjudged + list(segments_wanted.values())
        scores = {name: score(results, verdicts, rankings.k) for name, results in by_name.items()}
        rows.append(CompareRow(query, len(pool), len(unjudged), len(segments_wanted), scores))
    return Comparison(rankings.k, rankings.names, rows, to_judge)
