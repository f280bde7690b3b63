"""xmodal's query module: text -> images, image -> images, text -> texts, image -> texts.

It imports only the faces of xmodal.indexer (errors, imaging, models, store, and build for evaluate);
the HTTP service is its own face, xmodal.search.serve (it needs the serve extra).
"""
from .engine import SearchIndex, open_index
from .evaluation import evaluate
from .examples import parse_cli_term
from .fetch import ImageURL
from .hits import Hit, Hits
from .placement import choose_placement
from .fusion import DEFAULT_FUSION, FUSIONS
from .query import TARGETS, Query
from .recommend import DEFAULT_STRATEGY, STRATEGIES
from .voice import SpeechRecognizer, Transcript, transcribe, voice_available

__all__ = ["DEFAULT_FUSION", "DEFAULT_STRATEGY", "FUSIONS", "STRATEGIES", "TARGETS", "Hit", "Hits", "ImageURL", "Query", "SearchIndex", "SpeechRecognizer", "Transcript", "choose_placement",
           "evaluate", "open_index", "parse_cli_term", "transcribe", "voice_available"]
