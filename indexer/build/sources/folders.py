"""Walking photo folders: every supported image under a folder, hidden entries skipped, symlink loops safe."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ...errors import InvalidInputError, NoImagesError, option
from ...imaging import supported_extensions
from .formats import TEXT_FORMATS


def find_images(roots: list[str | Path]) -> list[str]:
    """Every supported image under `roots`, sorted; raises NoImagesError if there are none."""
    found = sorted({path for root in roots for path in list_images(root)})
    if not found:
        raise no_images_error(roots)
    return found


def list_images(root: str | Path) -> list[str]:
    """Every supported image under one folder, sorted; hidden entries skipped, symlink loops safe."""
    root = Path(root)
    if not root.exists():
        raise InvalidInputError(f"image folder {root} does not exist; check the path")
    if root.is_file():
        if root.suffix.lower() in TEXT_FORMATS:
            raise InvalidInputError(f"{root} is a text corpus, not an image folder; index it with "
                                    f"{option('texts', root)}")
        raise InvalidInputError(f"{root} is a file; give the folder that holds the images")
    return sorted(_walk_images(root, supported_extensions()))


def no_images_error(roots: list[str | Path]) -> NoImagesError:
    names = ", ".join(str(r) for r in roots)
    extensions = ", ".join(sorted(supported_extensions()))
    return NoImagesError(f"no images found in {names} (looked for {extensions}); point at a folder that holds images")


def _walk_images(root: Path, extensions: frozenset[str]) -> Iterator[str]:
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in extensions:
                continue
            path = os.path.join(os.path.abspath(dirpath), name)
            if os.path.isfile(path):
                yield path
