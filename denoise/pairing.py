"""One rule for pairing noisy files with their references (files are found by the one walker, denoise.walk).

``denoise eval`` (noisy ↔ clean reference ↔ another system's enhanced output) and paired fine-tuning
(noisy ↔ clean target) both pair through :func:`pair_folders`, so a folder is paired the same way by both.

The rule (by name; the extension never takes part, so ``a.flac`` pairs with ``a.wav``):

1. The *key* of a file is its path relative to its folder without the extension: the stem for a flat
   folder (``p232_001``), ``spk1/p232_001`` inside a sub-folder when walking recursively.
2. A noisy file pairs with the file of the other folder that has the same key (VoiceBank-DEMAND:
   ``p232_001.wav`` ↔ ``p232_001.wav``).
3. Failing that, with the file that has the same DNS-Challenge id in the same sub-folder
   (``clnsp3_…_fileid_12.wav`` ↔ ``clean_fileid_12.wav``). The id must be its own ``_``-separated field
   at the end of the stem, so ``fileid_12`` never matches ``fileid_120``.
4. Nothing is guessed: an id carried by several files of one folder identifies none of them, two files
   with the same key in one folder (``a.wav`` and ``a.flac``) are an error, and a stem found only in
   another sub-folder does not match.

A noisy file without a partner is kept with ``None`` (eval still scores it with the non-intrusive
DNSMOS); fine-tuning leaves such files out and says so. Nothing here opens an audio file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from denoise.walk import audio_files

_DNS_ID = re.compile(r"(?:^|_)(fileid_\d+)$")


def dns_id(stem: str) -> str | None:
    """``"fileid_12"`` for DNS-Challenge names such as ``clnsp3_…_fileid_12`` or ``clean_fileid_12``."""
    match = _DNS_ID.search(stem)
    return match.group(1) if match else None


def file_key(path: Path, root: Path) -> str:
    """The name a file is paired by: its path relative to ``root`` without the extension (rule 1)."""
    return path.relative_to(root).with_suffix("").as_posix()


class _KeyIndex:
    """The files of one folder, found by key (rule 2) or by DNS id within a sub-folder (rule 3)."""

    def __init__(self, root: Path, files: Iterable[Path]) -> None:
        self.by_key: dict[str, Path] = {}
        self.by_id: dict[tuple[str, str], Path] = {}
        ambiguous_ids: set[tuple[str, str]] = set()
        for path in files:
            key = file_key(path, root)
            if key in self.by_key:
                raise ValueError(f"two files share the name {key!r}: {self.by_key[key]}, {path}")
            self.by_key[key] = path
            id_key = _id_key(key)
            if id_key is not None:
                if id_key in self.by_id:
                    ambiguous_ids.add(id_key)
                self.by_id[id_key] = path
        for id_key in ambiguous_ids:  # an id shared by several files identifies none of them
            del self.by_id[id_key]

    def find(self, key: str) -> Path | None:
        if key in self.by_key:
            return self.by_key[key]
        id_key = _id_key(key)
        return self.by_id.get(id_key) if id_key is not None else None


def _id_key(key: str) -> tuple[str, str] | None:
    """(sub-folder, DNS id) of a key, or None when its stem carries no id."""
    path = PurePosixPath(key)
    found = dns_id(path.name)
    return (path.parent.as_posix(), found) if found is not None else None


@dataclass(frozen=True)
class Pair:
    """One noisy file with its clean reference and pre-computed enhanced file, when they exist."""

    noisy: Path
    clean: Path | None = None
    enhanced: Path | None = None

    @property
    def name(self) -> str:
        return self.noisy.stem


def pair_folders(
    noisy_dir: str | Path,
    clean_dir: str | Path | None = None,
    *,
    enhanced_dir: str | Path | None = None,
    exclude: Iterable[str] = (),
    recursive: bool = False,
) -> list[Pair]:
    """Every audio file of ``noisy_dir`` with its partners in ``clean_dir`` and ``enhanced_dir`` (module doc).

    Pairs come in the order of :func:`audio_files`; a missing partner is ``None``. ``exclude`` holds noisy
    keys (stems, for a flat folder) to leave out. ``recursive`` walks sub-folders of every folder, and
    partners are then looked up under the same relative path.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: two files of one folder differ only by extension.
    """
    noisy_root = Path(noisy_dir).expanduser()
    others = []
    for folder in (clean_dir, enhanced_dir):
        if folder is None:
            others.append(None)
        else:
            root = Path(folder).expanduser()
            others.append(_KeyIndex(root, audio_files(root, recursive=recursive)))
    clean, enhanced = others
    skip = set(exclude)
    noisy_index = _KeyIndex(noisy_root, audio_files(noisy_root, recursive=recursive))  # duplicate check
    pairs = []
    for key, noisy in noisy_index.by_key.items():
        if key in skip:
            continue
        pairs.append(
            Pair(
                noisy=noisy,
                clean=clean.find(key) if clean is not None else None,
                enhanced=enhanced.find(key) if enhanced is not None else None,
            )
        )
    return pairs
