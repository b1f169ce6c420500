"""Does `confidence` tell a real hit from nothing? `python bench/confidence.py`.

Two synthetic galleries indexed with the demo profile (the small CLIP, weight-free segments): one to fit the
logistic constants of irs.confidence (seed 31), one to report on (seed 41; the CLIP was trained on seed 7, the
fusion weights chosen on seed 77, the spatial benchmark uses 2026). On each: queries with a true answer (the
spatial benchmark's four families) and queries without one: colour/shape pairs absent from the gallery (alone,
placed, or next to a present object), present objects at a place where none is, relations no scene holds, and
nonsense text. Reported with the constants in irs/confidence.py, never with ones fitted on the reported gallery:

    result level  share of answered queries whose top result has confidence >= 0.5,
                  share of unanswerable queries whose top result has confidence < 0.5
    phrase level  over the top result's phrase matches: share of true matches (the phrase's object, at its
                  place, in its relation, is in that image) >= 0.5, share of false ones < 0.5

    python bench/confidence.py                      # 150 scenes per gallery, ~8 minutes on 2 cores
    python bench/confidence.py --gallery 100        # quicker, not the reported numbers
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_json  # noqa: E402

from irs.benchmark import PLACE_WORDS, RELATION_TESTS, benchmark_queries  # noqa: E402
from irs.confidence import CALIBRATIONS, Calibration  # noqa: E402
from irs.index import Index  # noqa: E402
from irs.settings import load_settings  # noqa: E402
from irs.synthetic import COLOURS, SHAPES, Scene, SceneObject, article, write_folder  # noqa: E402

FIT_SEED, REPORT_SEED = 31, 41
NONSENSE = (
    "quarterly tax invoice from 1987",
    "a cat sleeping on a sofa",
    "zebra",
    "the eiffel tower at night",
    "a man riding a horse",
    "invoice",
    "a bowl of ramen",
    "a red sports car",
    "snow on the mountains",
    "a birthday cake with candles",
    "an old typewriter",
    "lorem ipsum dolor sit amet",
    "a dog on the left",
    "a cat left of a dog",
    "a tree and a house",
    "blue sky",
)


class ObjectTest:
    """Does a scene object stand for a phrase: its name, and its place when the phrase has one."""

    def __init__(self, name: str, place: str = "") -> None:
        self.name, self.place = name, place

    def __call__(self, o: SceneObject) -> bool:
        return o.name == self.name and (not self.place or PLACE_WORDS[self.place](o))

    def by_name(self, o: SceneObject) -> bool:
        """The name alone (place and relation aside): all a similarity can know."""
        return o.name == self.name


class Query:
    """A query, whether any scene answers it, and per phrase a test of what counts as its object."""

    def __init__(self, kind: str, text: str, answered: bool, phrases: list[ObjectTest], relation: str = "") -> None:
        self.kind, self.text, self.answered, self.phrases, self.relation = kind, text, answered, phrases, relation

    def phrase_true(self, scene: Scene, i: int) -> bool:
        """Whether phrase i's object is in the scene (for a relation: in it with its partner)."""
        if not self.relation:
            return any(self.phrases[i](o) for o in scene.objects)
        test = RELATION_TESTS[self.relation]
        return any(
            a is not b and self.phrases[0](a) and self.phrases[1](b) and test(a, b)
            for a in scene.objects
            for b in scene.objects
        )


def named(name: str, place: str = "") -> ObjectTest:
    return ObjectTest(name, place)


def a_(name: str) -> str:
    return f"{article(name)} {name}"


def build_queries(scenes: list[Scene], per_family: int, seed: int) -> list[Query]:
    """Answered queries from the spatial benchmark's families, and as many unanswerable ones of each kind."""
    rng = np.random.default_rng(seed)
    queries = []
    for q in benchmark_queries(scenes, per_family, seed + 1):
        words = q.text.split()
        if q.family == "relation":
            pred = next(p for p in RELATION_TESTS if f" {p} " in q.text)
            left, right = q.text.split(f" {pred} ")
            tests = [named(left.split(" ", 1)[1]), named(right.split(" ", 1)[1])]
            queries.append(Query("answer:relation", q.text, True, tests, pred))
        elif q.family == "two_objects":
            left, right = q.text.split(" and ")
            tests = [named(left.split(" ", 1)[1]), named(right.split(" ", 1)[1])]
            queries.append(Query("answer:two_objects", q.text, True, tests))
        elif q.family == "absolute":
            name = " ".join(words[1:3])
            queries.append(Query("answer:absolute", q.text, True, [named(name, " ".join(words[3:]))]))
        else:
            queries.append(Query("answer:attribute", q.text, True, [named(" ".join(words[1:3]))]))

    objects = [o for s in scenes for o in s.objects]
    present = sorted({o.name for o in objects})
    absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]
    places = list(PLACE_WORDS)

    def pick(items: list) -> object:
        return items[int(rng.integers(len(items)))]

    for _ in range(per_family):
        name = str(pick(absent))
        queries.append(Query("absent:object", a_(name), False, [named(name)]))
        place = str(pick(places))
        queries.append(Query("absent:object placed", f"{a_(name)} {place}", False, [named(name, place)]))
        other = str(pick(present))
        queries.append(Query("absent:one of two", f"{a_(other)} and {a_(name)}", False, [named(other), named(name)]))
    seen: set[str] = set()
    for kind in ("absent:place", "absent:relation"):
        tries = 0
        while sum(q.kind == kind for q in queries) < per_family and tries < 200 * per_family:
            tries += 1
            name = str(pick(present))
            if kind == "absent:place":
                place = str(pick(places))
                text = f"{a_(name)} {place}"
                if text in seen or any(named(name, place)(o) for o in objects):
                    continue
                query = Query(kind, text, False, [named(name, place)])
            else:
                other, pred = str(pick(present)), str(pick(list(RELATION_TESTS)))
                text = f"{a_(name)} {pred} {a_(other)}"
                query = Query(kind, text, False, [named(name), named(other)], pred)
                if other == name or text in seen or any(query.phrase_true(s, 0) for s in scenes):
                    continue
            seen.add(text)
            queries.append(query)
    queries += [Query("nonsense", text, False, [named("")] * 8) for text in NONSENSE]
    return queries


def run_gallery(work: Path, size: int, seed: int, per_family: int, log: Callable[[str], object]) -> list[dict]:
    """Index one gallery and run every query: per query its top result's confidence, and per phrase match
    its similarity, the phrase's typical similarity, its confidence and whether it is true."""
    gallery = work / f"gallery-{seed}"
    t0 = time.monotonic()
    scenes = write_folder(gallery, size, seed, 256)
    by_name = {f"scene_{s.index:05d}.png": s for s in scenes}
    settings = load_settings(
        {"profile": "demo", "db": str(work / f"db-{seed}"), "work_max_side": 256, "device": "cpu"}, environ={}
    )
    rows = []
    with Index(settings) as index:
        index.add_folder(gallery)
        log(f"seed {seed}: {size} scenes, {index.stats().segments} segments indexed in {time.monotonic() - t0:.0f}s")
        queries = build_queries(scenes, per_family, seed)
        t0 = time.monotonic()
        for q in queries:
            top = index.search(q.text, 1)[0]
            scene = by_name[Path(top.path).name]
            matches = []
            for i, m in enumerate(top.matches):
                matches.append(
                    {
                        "phrase": m.phrase,
                        "similarity": m.parts["similarity"],
                        "typical": index_typical(index, m.phrase),
                        "confidence": m.confidence,
                        "true": q.phrase_true(scene, i) if i < len(q.phrases) else False,
                        "named": i < len(q.phrases) and any(q.phrases[i].by_name(o) for o in scene.objects),
                    }
                )
            rows.append(
                {
                    "kind": q.kind,
                    "text": q.text,
                    "answered": q.answered,
                    "confidence": top.confidence,
                    "matches": matches,
                }
            )
        log(f"seed {seed}: {len(queries)} queries in {time.monotonic() - t0:.0f}s")
    return rows


_typical_cache: dict[tuple[int, str], float] = {}


def index_typical(index: Index, phrase: str) -> float:
    """The phrase's pool median as the search saw it (recomputed here for fitting; the same pool size)."""
    key = (id(index), phrase)
    if key not in _typical_cache:
        vec = index.embedder.texts([phrase])[0]
        sims = index.store.query_segments(vec, index.settings.segment_pool).returned  # as irs.search reads it
        _typical_cache[key] = float(np.median(sims)) if len(sims) else float("nan")
    return _typical_cache[key]


def fit(rows: list[dict]) -> Calibration:
    """Logistic regression (Newton's method, a little ridge) of 'the phrase's object is in the image' on the
    similarity and its excess over typical; a weight that comes out negative is dropped and the rest refitted,
    so the confidence stays monotone in the similarity."""
    x = np.array([[m["similarity"], m["similarity"] - m["typical"]] for r in rows for m in r["matches"]])
    y = np.array([float(m["named"]) for r in rows for m in r["matches"]])
    keep = [0, 1]
    while True:
        a = np.column_stack([x[:, keep], np.ones(len(x))])
        w = np.zeros(a.shape[1])
        for _ in range(100):
            p = 1 / (1 + np.exp(-(a @ w)))
            grad = a.T @ (p - y) + 1e-3 * w
            hess = (a * (p * (1 - p))[:, None]).T @ a + 1e-3 * np.eye(len(w))
            w -= np.linalg.solve(hess, grad)
        if all(w[: len(keep)] >= 0) or len(keep) == 1:
            break
        keep = [k for k, v in zip(keep, w) if v >= 0] or [0]
    weights = dict(zip(keep, w[: len(keep)]))
    return Calibration(
        round(float(max(weights.get(0, 0.0), 0.0)), 2),
        round(float(max(weights.get(1, 0.0), 0.0)), 2),
        round(float(w[-1]), 2),
    )


def rates(rows: list[dict]) -> dict:
    """The result-level and phrase-level rates, overall and per kind of query."""
    answered = [r for r in rows if r["answered"]]
    unanswered = [r for r in rows if not r["answered"]]
    matches = [m for r in rows for m in r["matches"]]
    true_m = [m for m in matches if m["true"]]
    false_m = [m for m in matches if not m["true"]]

    def share(items: list, ok: Callable[[dict], bool]) -> float | None:
        return round(sum(map(ok, items)) / len(items), 4) if items else None

    kinds = sorted({r["kind"] for r in rows})
    return {
        "answered_strong": share(answered, lambda r: r["confidence"] >= 0.5),
        "unanswered_weak": share(unanswered, lambda r: r["confidence"] < 0.5),
        "true_phrase_strong": share(true_m, lambda m: m["confidence"] >= 0.5),
        "false_phrase_weak": share(false_m, lambda m: m["confidence"] < 0.5),
        "counts": {
            "answered": len(answered),
            "unanswered": len(unanswered),
            "true_phrases": len(true_m),
            "false_phrases": len(false_m),
        },
        "by_kind": {
            k: {
                "queries": sum(r["kind"] == k for r in rows),
                "rate": share(
                    [r for r in rows if r["kind"] == k],
                    (lambda r: r["confidence"] >= 0.5) if k.startswith("answer") else (lambda r: r["confidence"] < 0.5),
                ),
                "median_confidence": round(float(np.median([r["confidence"] for r in rows if r["kind"] == k])), 4),
            }
            for k in kinds
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=150)
    parser.add_argument("--per-family", type=int, default=20)
    parser.add_argument("--fit-seed", type=int, default=FIT_SEED)
    parser.add_argument("--report-seed", type=int, default=REPORT_SEED)
    parser.add_argument("--work", default=str(ROOT / "bench/out/confidence"))
    parser.add_argument("--json", default=str(ROOT / "bench/results/confidence.json"))
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()

    fit_rows = run_gallery(work, args.gallery, args.fit_seed, args.per_family, print)
    fitted = fit(fit_rows)
    used = CALIBRATIONS["irs-small"]
    print(f"fitted on seed {args.fit_seed}: {fitted}; irs/confidence.py uses {used}")
    report_rows = run_gallery(work, args.gallery, args.report_seed, args.per_family, print)
    result = {"fit": rates(fit_rows), "report": rates(report_rows)}

    print(
        f"\n{'gallery':<22}{'answered >= 0.5':>17}{'no answer < 0.5':>17}{'true phrase >= 0.5':>20}"
        f"{'false phrase < 0.5':>20}"
    )
    for name, seed in (("fit", args.fit_seed), ("report", args.report_seed)):
        r = result[name]
        print(
            f"{name + f' (seed {seed})':<22}{r['answered_strong']:>17.3f}{r['unanswered_weak']:>17.3f}"
            f"{r['true_phrase_strong']:>20.3f}{r['false_phrase_weak']:>20.3f}"
        )
    print(f"\nreport gallery (seed {args.report_seed}) by kind of query:")
    print(f"{'kind':<24}{'queries':>8}{'right side of 0.5':>19}{'median conf.':>14}")
    for kind, v in result["report"]["by_kind"].items():
        print(f"{kind:<24}{v['queries']:>8}{v['rate']:>19.3f}{v['median_confidence']:>14.3f}")
    shaped = {
        "calibration_used": used.__dict__,
        "calibration_fitted": fitted.__dict__,
        "fit_seed": args.fit_seed,
        "report_seed": args.report_seed,
        "gallery": args.gallery,
        "per_family": args.per_family,
        "seconds": round(time.monotonic() - started),
        **result,
        "report_queries": report_rows,
    }
    write_json(args.json, shaped)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
