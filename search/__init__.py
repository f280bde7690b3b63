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
from .query import Query
from .voice import SpeechRecognizer, Transcript, transcribe, voice_available

__all__ = ["Hit", "Hits", "ImageURL", "Query", "SearchIndex", "SpeechRecognizer", "Transcript", "choose_placement",
           "evaluate", "open_index", "parse_cli_term", "transcribe", "voice_available"]
