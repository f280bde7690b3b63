"""xmodal's query module: text -> images, image -> images, text -> texts, image -> texts."""
from .engine import SearchIndex, open_index
from .fetch import ImageURL
from .hits import Hit

__all__ = ["Hit", "ImageURL", "SearchIndex", "open_index"]
