"""Query understanding: a text query -> object phrases, absolute positions, relations, weighted terms.

The parser is deterministic and never fails: any text gives a ParsedQuery (possibly with no structure).
The whole query is always embedded too (see irs.search), so whatever the parser does not understand
still counts. README "Query syntax" has the table of phrases and their meanings.

Whether a parsed query can be searched at all is a separate question, answered by `check_searchable`:
a query with nothing to embed, or whose terms all count for nothing, raises QueryError there.

Term weights ("2:red car", "-0.5:night"): a weight is a decimal number, optionally with an exponent
("1e-3:cat"); "nan:" and "inf:" are not numbers here, they stay words of the query. Weights are clamped
to [0, 100] (a number too large for a float counts as 100), and a term of weight 0 is dropped, as is a
term with nothing to embed ("+!!!"). Only the ratios of the positive weights matter, so "1e-320:cat"
alone ranks exactly like "cat"; a negative term's weight is absolute (it scales `weight_negative`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

# Absolute positions, longest phrasings first. _NOT_OF keeps "on the left (side) of X" and "further left than X"
# relations.
_NOT_OF = r"(?![\s-]+(?:(?:hand[\s-]+)?side\s+|(?:down|up)\s+)?(?:of|than)\b)"
# what may lead into a place: "on the", "near the", "towards the far", "at the very"
_LEAD = r"(?:(?:in|at|on|to|near|towards?|along|by)\s+(?:the\s+)?)?(?:(?:far|very|extreme)[\s-]+)?"
_CORNERS = {
    "top left": r"(?:top|upper)[\s-]*left|left[\s-]*(?:top|upper)",
    "top right": r"(?:top|upper)[\s-]*right|right[\s-]*(?:top|upper)",
    "bottom left": r"(?:bottom|lower)[\s-]*left|left[\s-]*(?:bottom|lower)",
    "bottom right": r"(?:bottom|lower)[\s-]*right|right[\s-]*(?:bottom|lower)",
}
POSITION_PATTERNS: list[tuple[str, str]] = [
    *[
        (
            name,
            rf"\b{_LEAD}(?:{words})(?:\s+(?:hand\s+)?(?:corner|side|part|area))?"
            rf"(?:\s+of\s+the\s+(?:image|picture|photo|frame))?{_NOT_OF}\b",
        )
        for name, words in _CORNERS.items()
    ],
    (
        "centre",
        rf"\b{_LEAD}(?:centre|center|middle)(?:\s+of\s+the\s+(?:image|picture|photo|frame))?"
        rf"{_NOT_OF}\b|\bcent(?:er|r)ed\b",
    ),
    *[
        (
            name,
            rf"\b{_LEAD}(?:{word})(?:[\s-]+(?:hand\s+)?(?:side|half|edge|part|border))?"
            rf"(?:\s+of\s+the\s+(?:image|picture|photo|frame))?{_NOT_OF}\b",
        )
        for name, word in [("left", "left"), ("right", "right"), ("top", "top|upper"), ("bottom", "bottom|lower")]
    ],
]
_POSITION_RES = [(name, re.compile(pattern)) for name, pattern in POSITION_PATTERNS]
# "top" alone must not swallow "on top of"; "left"/"right" alone must not swallow "left of".

# Relations between two objects: phrasing -> canonical predicate. Longest first.
RELATION_WORDS: list[tuple[str, str]] = [
    ("to the left hand side of", "left of"),
    ("to the left side of", "left of"),
    ("on the left hand side of", "left of"),
    ("on the left side of", "left of"),
    ("to the right hand side of", "right of"),
    ("to the right side of", "right of"),
    ("on the right hand side of", "right of"),
    ("on the right side of", "right of"),
    ("further to the left than", "left of"),
    ("farther to the left than", "left of"),
    ("more to the left than", "left of"),
    ("further to the right than", "right of"),
    ("farther to the right than", "right of"),
    ("more to the right than", "right of"),
    ("further left than", "left of"),
    ("farther left than", "left of"),
    ("further right than", "right of"),
    ("farther right than", "right of"),
    ("higher up than", "above"),
    ("further up than", "above"),
    ("higher than", "above"),
    ("lower down than", "below"),
    ("further down than", "below"),
    ("lower than", "below"),
    ("to the left of", "left of"),
    ("on the left of", "left of"),
    ("left of", "left of"),
    ("to the right of", "right of"),
    ("on the right of", "right of"),
    ("right of", "right of"),
    ("on top of", "on top of"),
    ("next to", "next to"),
    ("close to", "near"),
    ("near to", "near"),
    ("inside of", "inside"),
    ("underneath", "below"),
    ("beneath", "below"),
    ("beside", "next to"),
    ("inside", "inside"),
    ("within", "inside"),
    ("above", "above"),
    ("below", "below"),
    ("under", "below"),
    ("over", "above"),
    ("near", "near"),
]
# "on" and "in" are relations only before an article: "a cup on a table", "a dog in the car".
_ARTICLE_RELATIONS = [("on", "on top of"), ("in", "inside")]
_RELATION_RE = re.compile(
    r"\b(?:"
    + "|".join(re.escape(w).replace(r"\ ", r"[\s-]+") for w, _ in RELATION_WORDS)
    + r")\b|\b(?:on|in)\b(?=\s+(?:a|an|the|some|my|his|her|their)\b)"
)
_RELATION_OF = dict(RELATION_WORDS) | dict(_ARTICLE_RELATIONS)

# Where the whole picture is meant, not an object: "in the picture", "in this photo", "somewhere in the image".
# Removed before parsing, so a place never becomes an object (or the object of an "inside" relation).
_PLACE_RE = re.compile(
    r"\b(?:somewhere\s+)?(?:in|on|within|inside|of)\s+(?:the|this|that|my|our|your)\s+"
    r"(?:picture|image|photo|photograph|frame|scene|shot|view)\b"
    r"|\b(?:in|at)\s+(?:a|the)\s+corner\b(?=.*\b(?:top|upper|bottom|lower)\b)"  # "in the corner at the top right"
)
# how people start a request, not what they look for: "show me …", "a photo of …", "there is …", "both … and …"
_FILLER_RE = re.compile(
    r"^(?:(?:please\s+)?(?:show\s+me|find(?:\s+me)?|look\s+for|search\s+for|give\s+me|i\s+want)\s+"
    r"|(?:(?:an?|the)\s+)?(?:photo|picture|image|shot|scene)\s+(?:of|with|showing|containing)\s+"
    r"|there\s+(?:is|are)\s+|there's\s+|both\s+)+",
    re.IGNORECASE,
)
# between two objects: "and", "with", "plus", "together with", "as well as", "along with", "&", a comma, ";"
_CONJUNCTION_RE = re.compile(
    r"\s*,\s*(?:and\s+|plus\s+|with\s+)?|\s*;\s*|\s*&\s*|"
    r"\s+(?:and|with|plus|together\s+with|as\s+well\s+as|along\s+with|alongside)\s+"
)
_LEADING_WORDS = {"and", "is", "are", "that", "which", "who", "with", "of", "to", "on", "in", "at", "there", "there's"}
# words a place or relation can leave behind at a phrase's end: "a red circle near (the bottom edge)"
_TRAILING_WORDS = _LEADING_WORDS | {"a", "an", "the", "near", "far", "very", "towards", "toward", "by", "along"}
MAX_QUERY_CHARS = 1000  # longer queries are cut (CLIP reads far less than this anyway)
MAX_PARTS = 32  # phrases, terms and negatives a query uses at most: each costs a vector query per search
MAX_WEIGHT = 100.0
_NUMBER = r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"  # a term weight: "2", "0.5", "1e-3" (never "nan" or "inf")
EMPTY_QUERY = "empty query: type what to look for"
NOTHING_WANTED = (
    "nothing to look for: every term is negative or has weight 0 (write what you want too, e.g. 'cat -dog')"
)


class QueryError(ValueError):
    """A query that cannot be searched; the message is for people."""


@dataclass(frozen=True)
class Phrase:
    """An object to find, optionally with where it should be."""

    text: str
    position: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Relation:
    """`phrases[subject]` stands in `predicate` to `phrases[object]`."""

    subject: int
    predicate: str
    object: int


@dataclass(frozen=True)
class ParsedQuery:
    text: str
    phrases: tuple[Phrase, ...] = ()
    relations: tuple[Relation, ...] = ()
    negatives: tuple[Phrase, ...] = ()
    weighted: bool = False  # rclip-style terms were used
    terms: tuple[Phrase, ...] = field(default=(), repr=False)  # positive terms, for the whole-image vector

    @property
    def plain(self) -> bool:
        """One phrase, no position, relation or negative: ranks like a plain CLIP query."""
        return (
            len(self.phrases) <= 1
            and not self.relations
            and not self.negatives
            and all(p.position is None for p in self.phrases)
        )

    def describe(self) -> str:
        """For people: "object: red car · position: left"."""
        parts = []
        for p in self.phrases:
            parts.append(
                f"object: {p.text}"
                + (f" · position: {p.position}" if p.position else "")
                + (f" · weight: {p.weight:g}" if p.weight != 1 else "")
            )
        for r in self.relations:
            parts.append(f"relation: {self.phrases[r.subject].text} {r.predicate} {self.phrases[r.object].text}")
        for n in self.negatives:
            parts.append(f"not: {n.text}" + (f" · weight: {n.weight:g}" if n.weight != 1 else ""))
        return " · ".join(parts) if parts else "(nothing recognised)"

    def to_json(self) -> dict:
        return {
            "phrases": [{"text": p.text, "position": p.position, "weight": p.weight} for p in self.phrases],
            "relations": [{"subject": r.subject, "predicate": r.predicate, "object": r.object} for r in self.relations],
            "negatives": [{"text": n.text, "weight": n.weight} for n in self.negatives],
        }


def has_content(text: str) -> bool:
    """Whether text has anything to embed: a letter, a digit or a pictograph (emoji), not just
    spaces and punctuation."""
    return any(unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "So" for ch in text)


def check_searchable(parsed: ParsedQuery) -> None:
    """Raise QueryError when a parsed query gives nothing to search for."""
    if not has_content(parsed.text):
        raise QueryError(EMPTY_QUERY)
    if parsed.weighted and not parsed.terms:
        raise QueryError(NOTHING_WANTED)


def _weight(text: str | None) -> float:
    """A term weight from its digits: 1 when absent, clamped to [0, MAX_WEIGHT] (an overflow counts as
    the maximum)."""
    if not text:
        return 1.0
    value = float(text)  # the pattern admits only digits: never NaN, at worst inf
    return MAX_WEIGHT if not math.isfinite(value) else min(max(value, 0.0), MAX_WEIGHT)


def _normalise(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text[:MAX_QUERY_CHARS])
    return re.sub(r"\s+", " ", text).strip()


def _clean_phrase(text: str) -> str:
    words = re.sub(r"[^\w\s'-]", " ", text).split()
    while words and words[0].lower() in _LEADING_WORDS:
        words.pop(0)
    while words and words[-1].lower() in _TRAILING_WORDS:
        words.pop()
    return " ".join(words)


def _blank_positions(clause: str) -> str:
    """The clause in lower case with every position phrase blanked out (offsets kept), so that a
    relation word inside a position ("on the left", "in the top") is never taken for a relation."""
    lowered = clause.lower()
    for _, pattern in _POSITION_RES:
        lowered = pattern.sub(lambda m: " " * len(m.group(0)), lowered)
    return lowered


def _take_position(clause: str) -> tuple[str, str | None]:
    """Remove the first position phrase from a clause: (the rest, position)."""
    lowered = clause.lower()
    for name, pattern in _POSITION_RES:
        match = pattern.search(lowered)
        if match and match.group(0).strip():
            rest = clause[: match.start()] + " " + clause[match.end() :]
            return re.sub(r"\s+", " ", rest).strip(), name
    return clause, None


def _split_terms(text: str) -> list[tuple[int, float, str]] | None:
    """rclip-style terms "cat -dog +2:red": [(sign, weight, text)], or None when none are used.

    Terms of weight 0 and terms with nothing to embed are left out (they would count for nothing)."""
    pieces = re.split(rf"\s+(?=[+-][^\s+-]|{_NUMBER}:\S)", text)
    terms = []
    used = False
    for piece in pieces:
        match = re.match(rf"([+-])?(?:({_NUMBER}):)?(.*)", piece, re.S)
        sign_txt, weight_txt, body = match.group(1), match.group(2), match.group(3).strip()
        used = used or bool(sign_txt) or bool(weight_txt)
        weight = _weight(weight_txt)
        if weight > 0 and has_content(body):
            terms.append((-1 if sign_txt == "-" else 1, weight, body))
    return terms if used else None


def parse_query(text: str) -> ParsedQuery:
    """Parse a query. Never raises; an empty query has no phrases."""
    text = _normalise(text)
    if not text:
        return ParsedQuery(text="")
    terms = _split_terms(text)
    if terms is None:
        phrases, relations = _capped(*_parse_term(text, 1.0))
        return ParsedQuery(text, phrases, relations, terms=(Phrase(text),))
    phrases, relations, negatives, positives = [], [], [], []
    for sign, weight, body in terms:
        if sign < 0:
            negatives.append(Phrase(_clean_phrase(body) or body, None, weight))
            continue
        positives.append(Phrase(body, None, weight))
        term_phrases, term_relations = _parse_term(body, weight)
        offset = len(phrases)
        phrases.extend(term_phrases)
        relations.extend(Relation(r.subject + offset, r.predicate, r.object + offset) for r in term_relations)
    phrases, relations = _capped(phrases, relations)
    return ParsedQuery(text, phrases, relations, tuple(negatives[:MAX_PARTS]), True, tuple(positives[:MAX_PARTS]))


def _capped(phrases: list[Phrase], relations: list[Relation]) -> tuple[tuple[Phrase, ...], tuple[Relation, ...]]:
    """The first MAX_PARTS phrases and the relations among them, so that the work of one search has a bound
    whatever the query (in a plain query the rest still counts through the whole-query vector)."""
    kept = tuple(phrases[:MAX_PARTS])
    return kept, tuple(r for r in relations if max(r.subject, r.object) < len(kept))


def _parse_term(text: str, weight: float) -> tuple[list[Phrase], list[Relation]]:
    phrases: list[Phrase] = []
    relations: list[Relation] = []
    text = re.sub(r"\s+", " ", _PLACE_RE.sub(" ", text)).strip() or text  # a place alone stays the query
    text = _FILLER_RE.sub("", text) or text
    for clause in _CONJUNCTION_RE.split(text):
        if not clause.strip():
            continue
        match = _RELATION_RE.search(_blank_positions(clause))
        if match:
            left, right = clause[: match.start()], clause[match.end() :]
            left, left_pos = _take_position(left)
            right, right_pos = _take_position(right)
            subject, obj = _clean_phrase(left), _clean_phrase(right)
            if subject and obj:
                phrases.append(Phrase(subject, left_pos, weight))
                phrases.append(Phrase(obj, right_pos, weight))
                predicate = _RELATION_OF[re.sub(r"[\s-]+", " ", match.group(0))]
                relations.append(Relation(len(phrases) - 2, predicate, len(phrases) - 1))
                continue
        rest, position = _take_position(clause)
        phrase = _clean_phrase(rest)
        if not phrase and position and phrases and phrases[-1].position is None:
            # "a red circle, bottom right": the place of the object before it, not an object of its own
            phrases[-1] = Phrase(phrases[-1].text, position, phrases[-1].weight)
            continue
        if not phrase and position:
            phrase = clause.strip()  # "on the left" alone: the words themselves are the object
        if phrase:
            phrases.append(Phrase(phrase, position, weight))
    return phrases, relations
