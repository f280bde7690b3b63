"""`xmodal serve`: the engine over HTTP, and the search page (extra: pip install 'xmodal[serve]')."""
from .app import create_app

__all__ = ["create_app"]
