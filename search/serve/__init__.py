"""`xmodal serve`: the engine over HTTP, and the search page (extra: pip install 'xmodal[serve]')."""
