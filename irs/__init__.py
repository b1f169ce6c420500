"""irs: image retrieval with Segment Anything segments, CLIP vectors and Chroma."""

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
