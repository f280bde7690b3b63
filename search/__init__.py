"""xmodal's query module: text -> images, image -> images, text -> texts, image -> texts."""
from .engine import SearchIndex, open_index
from .hits import Hit

__all__ = ["Hit", "SearchIndex", "open_index"]
