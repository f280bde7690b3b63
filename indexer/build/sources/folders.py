"""Walking photo folders: every supported image under a folder, hidden entries skipped, symlink loops safe."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    return walk_images(root).images


@dataclass
class FolderWalk:
    """What walking a photo folder found: its images, and what under it could not be looked into (a subfolder
    that cannot be listed, a broken link), each as (path, reason): a run records those as it records an image
    that does not decode, so that nothing is left out unsaid."""

    images: list[str] = field(default_factory=list)  # sorted
    problems: list[tuple[str, str]] = field(default_factory=list)


def walk_images(root: str | Path) -> FolderWalk:
    """Every supported image under one folder, sorted, and what could not be looked into."""
    root = Path(root)
    if not root.exists():
        raise InvalidInputError(f"image folder {root} does not exist; check the path")
    if root.is_file():
        if root.suffix.lower() in TEXT_FORMATS:
            raise InvalidInputError(f"{root} is a text corpus, not an image folder; index it with "
                                    f"{option('texts', root)}")
        raise InvalidInputError(f"{root} is a file; give the folder that holds the images")
    walk = FolderWalk()
    walk.images = sorted(_walk_images(root, supported_extensions(), walk.problems))
    walk.problems.sort()
    return walk


def no_images_error(roots: list[str | Path]) -> NoImagesError:
    names = ", ".join(str(r) for r in roots)
    extensions = ", ".join(sorted(supported_extensions()))
    return NoImagesError(f"no images found in {names} (looked for {extensions}); point at a folder that holds images")


def _walk_images(root: Path, extensions: frozenset[str], problems: list[tuple[str, str]]) -> Iterator[str]:
    seen_dirs: set[tuple[int, int]] = set()

    def unlisted(exc: OSError) -> None:  # os.walk would pass over a folder it cannot list without a word
        problems.append((os.path.abspath(exc.filename), f"unreadable folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=True):
        try:
            stat = os.stat(dirpath)
        except OSError as exc:  # gone since it was listed
            unlisted(exc)
            dirnames[:] = []
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            extension = os.path.splitext(name)[1].lower()
            if name.startswith(".") or (extension and extension not in extensions):
                continue
            path = os.path.join(os.path.abspath(dirpath), name)
            if os.path.isfile(path):
                if extension:
                    yield path
            elif os.path.islink(path):  # a photo or a folder of them once; a name without an extension may be either
                problems.append((path, _broken_link(path)))
            elif extension:
                problems.append((path, "not a regular file"))


def _broken_link(path: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        return f"a broken link (to {os.readlink(path)}): {exc.strerror or exc}"
    return f"a link (to {os.readlink(path)}) to neither a file nor a folder"
