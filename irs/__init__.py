"""irs: image retrieval with Segment Anything segments, CLIP vectors and Chroma."""

import os

# Before torch loads its OpenMP runtime: threads waiting for work sleep instead of spinning, because spinning
# threads starve each other when another process (or this process's own indexing job) uses the cores; the
# README's "Search latency" gives the cost both ways. A value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from irs.index import Index, IndexReport, Progress
from irs.records import BadFile, SearchResult, Segment
from irs.settings import Settings, load_settings
from irs.version import __version__

__all__ = [
    "__version__",
    "Index",
    "IndexReport",
    "Progress",
    "BadFile",
    "SearchResult",
    "Segment",
    "Settings",
    "load_settings",
]
