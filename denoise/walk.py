"""The one folder walker: which files below a folder are inputs, and an account of everything left out.

Rules (README "What you can count on"):

* a single file given as the input is that one input;
* folders are walked recursively in sorted order; symlinked sub-folders are followed, each real folder
  once (so a loop ends), under its real name when it is also reached directly;
* folders given in ``exclude`` (e.g. an output folder inside the input folder) are compared by their
  resolved path, so a relative ``-i`` or one reached through a symlink still excludes them;
* nothing is ignored silently: hidden files and folders, audio without an extension, other files and
  repeated folders are counted in :attr:`Walk.skipped` with the reason (listed with ``--verbose``).
"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from denoise.audio import is_audio_path

# First bytes of containers libsndfile reads, to tell extension-less audio from other files.
_AUDIO_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3", b".snd", b"caff")


@dataclass
class Walk:
    """What a walk found: ``files`` to process (sorted) and ``skipped`` (path, reason) pairs."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skip_counts(self) -> Counter[str]:
        return Counter(reason for _, reason in self.skipped)


def _looks_like_audio(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_AUDIO_MAGIC) or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk_inputs(
    root: str | Path, exclude: list[Path] | tuple[Path, ...] = (), *, recursive: bool = True
) -> Walk:
    """Inputs below ``root`` (or ``root`` itself when it is a file), leaving out ``exclude``d folders.

    ``recursive=False`` takes only the files directly in ``root`` (sub-folders are counted as skipped).
    """
    root = Path(root)
    walk = Walk(root)
    if not root.is_dir():
        walk.files.append(root)
        return walk
    excluded = {ident for p in exclude if (ident := _identity(Path(p))) is not None}
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        ident = _identity(folder)
        if ident is None or ident in seen:
            walk.skipped.append((folder, "folder already walked (symlink loop or repeat)"))
            continue
        seen.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            walk.skipped.append((folder, f"folder cannot be read ({err.strerror or err})"))
            continue
        subfolders: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if _identity(path) in excluded:
                    walk.skipped.append((path, "output folder"))
                elif not recursive:
                    walk.skipped.append((path, "sub-folder (not walked)"))
                elif entry.name.startswith("."):
                    walk.skipped.append((path, "hidden folder"))
                else:
                    subfolders.append(path)
            elif entry.name.startswith("."):
                walk.skipped.append((path, "hidden file"))
            elif is_audio_path(path):
                walk.files.append(path)
            elif not path.suffix and _looks_like_audio(path):
                walk.skipped.append((path, "audio without an extension (add .wav/.flac/... to include it)"))
            else:
                walk.skipped.append((path, "not an audio file name"))
        # Depth-first, sorted, real sub-folders before symlinked ones: a folder reached both ways is
        # walked (and its outputs named) under its real name.
        subfolders.sort(key=lambda path: (path.is_symlink(), path.name))
        pending.extend(reversed(subfolders))
    walk.files.sort()
    return walk


def audio_files(folder: str | Path, *, recursive: bool = False, patterns: Sequence[str] = ()) -> list[Path]:
    """The audio files of ``folder`` (the walk's rules), sorted; a one-line error if it is not a folder.

    ``recursive`` walks sub-folders too. ``patterns`` keeps only files whose path relative to ``folder``
    matches one of these globs (e.g. ``"fan_*.wav"``, ``"kitchen/*"``). Used by eval and fine-tuning.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist")
    files = walk_inputs(root, recursive=recursive).files
    if patterns:
        files = [
            p for p in files if any(fnmatch.fnmatch(p.relative_to(root).as_posix(), g) for g in patterns)
        ]
    return files
