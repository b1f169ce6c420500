"""irs: image retrieval with Segment Anything segments, CLIP vectors and Chroma."""

__version__ = "0.1.0"

from irs.index import Index, IndexReport, Progress  # noqa: E402
from irs.records import BadFile, SearchResult, Segment  # noqa: E402
from irs.settings import Settings, load_settings  # noqa: E402

__all__ = ["Index", "IndexReport", "Progress", "BadFile", "SearchResult", "Segment", "Settings", "load_settings"]
