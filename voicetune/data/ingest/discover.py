"""Find the files to read under an input folder: nested folders, symlinks (loops refused), one
line for anything skipped."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dropped:
    """An input left out, and why (shown to the person and kept in the manifest)."""

    file: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    path: Path  # as found (may go through a symlink)
    rel: str  # posix path relative to the input root: the document's id


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def discover(root: Path, suffixes: set[str]) -> tuple[list[Candidate], list[Dropped]]:
    """Every file under root whose suffix is in suffixes, in a stable order.

    Folders reached twice through symlinks (a loop, or two links to one folder) are read once;
    broken links, link loops, unreadable folders and unsupported formats each get a Dropped line.
    Hidden files and folders (".git", ".DS_Store") are ignored silently.
    """
    if root.is_file():
        return [Candidate(root, root.name)], []
    found: list[Candidate] = []
    dropped: list[Dropped] = []
    seen_dirs: dict[tuple[int, int], str] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
        except OSError as exc:
            dropped.append(Dropped(_rel(folder, root), f"cannot open folder ({exc.strerror})"))
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen_dirs:
            dropped.append(
                Dropped(
                    _rel(folder, root) + "/",
                    f"symlink loop (or a second link): same folder as {seen_dirs[key]}/",
                )
            )
            continue
        seen_dirs[key] = _rel(folder, root) or "."
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            dropped.append(
                Dropped(
                    _rel(folder, root) + "/", f"cannot list folder ({exc.strerror}): check its permissions"
                )
            )
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            rel = _rel(path, root)
            try:
                mode = os.stat(path).st_mode  # follows symlinks
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    dropped.append(Dropped(rel, "symlink loop: the link points back to itself"))
                elif entry.is_symlink():
                    dropped.append(Dropped(rel, "broken symlink: its target is missing"))
                else:
                    dropped.append(Dropped(rel, f"cannot read ({exc.strerror})"))
                continue
            if stat.S_ISDIR(mode):
                subfolders.append(path)
            elif not stat.S_ISREG(mode):
                dropped.append(Dropped(rel, "not a regular file (device, pipe or socket)"))
            elif path.suffix.lower() in suffixes:
                found.append(Candidate(path, rel))
            else:
                supported = " ".join(sorted(suffixes))
                dropped.append(
                    Dropped(rel, f"unsupported format '{path.suffix or '(none)'}' (read: {supported})")
                )
        # Reversed so the stack pops folders in name order: a stable, readable order.
        stack.extend(reversed(subfolders))
    found.sort(key=lambda candidate: candidate.rel)
    return found, dropped
