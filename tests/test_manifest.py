"""The results manifest and resume rules (issue 13 item 1): the API the cluster runner reuses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from denoise.manifest import (
    ManifestWriter,
    input_identity,
    path_text,
    plan_resume,
    read_input_list,
    read_manifest,
    settings_hash,
)


def _done_row(source: Path, target: Path, digest: str) -> dict:
    return {
        "input": path_text(source),
        **input_identity(source),
        "output": path_text(target),
        "output_size": target.stat().st_size,
        "output_frames": sf.info(os.fsencode(target)).frames,
        "settings_hash": digest,
        "status": "done",
    }


def test_rows_survive_a_torn_last_line_and_odd_names(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    odd = Path(os.fsdecode(b"/data/\xd6\xd0\nx.wav"))
    with ManifestWriter(path) as writer:
        writer.append({"input": path_text(odd), "status": "done"})
        writer.append({"input": "b.wav", "status": "failed", "reason": "empty file (0 bytes)"})
    with open(path, "ab") as fh:
        fh.write(b'{"input": "c.wav", "sta')  # a power cut mid-row
    rows = read_manifest(path)
    assert [r["input"] for r in rows] == [str(odd), "b.wav"]
    assert os.fsencode(rows[0]["input"]) == b"/data/\xd6\xd0\nx.wav"
    assert path.read_bytes().count(b"\n") == 2, "one line per row, newlines in names escaped"


def test_a_run_after_a_torn_row_keeps_its_own_first_row(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"input": "a.wav", "status": "done"}\n{"input": "c.wav", "sta')  # killed mid-row
    with ManifestWriter(path) as writer:  # the next run
        writer.append({"input": "c.wav", "status": "done"})
        writer.append({"input": "d.wav", "status": "done"})
    assert [r["input"] for r in read_manifest(path)] == ["a.wav", "c.wav", "d.wav"]


def test_writer_creates_nothing_until_a_row_is_written(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / "m.jsonl"):
        pass
    assert not (tmp_path / "m.jsonl").exists()
    assert read_manifest(tmp_path / "m.jsonl") == []


def test_settings_hash_is_stable_and_order_free() -> None:
    """A fixed value: a change here would make every earlier output look "made with other settings"."""
    assert settings_hash({"a": 1, "b": None}) == settings_hash({"b": None, "a": 1}) == "46e0ff59f6164548"
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


def test_resume_reuses_only_matching_intact_outputs(tmp_path: Path) -> None:
    x = np.zeros(1600, np.float32)
    names = ("ok", "other_settings", "changed_input", "zero_length", "corrupt", "failed", "new", "renamed")
    pairs = {}
    rows = []
    for name in names:
        src, dst = tmp_path / f"{name}.wav", tmp_path / "out" / f"{name}.wav"
        dst.parent.mkdir(exist_ok=True)
        sf.write(src, x, 16000)
        sf.write(dst, x, 16000)
        pairs[name] = (src, dst)
        if name != "new":
            rows.append(_done_row(src, dst, "other" if name == "other_settings" else "h"))
    rows.append({**rows[names.index("failed")], "status": "failed"})
    rows.append({**rows[0], "status": "skipped", "settings_hash": "zzz"})  # skipped rows do not count
    os.utime(pairs["changed_input"][0], ns=(1, 1))
    pairs["zero_length"][1].write_bytes(b"")
    data = pairs["corrupt"][1].read_bytes()
    pairs["corrupt"][1].write_bytes(b"\xff" * 12 + data[12:])  # same size, header broken
    pairs["renamed"] = (pairs["renamed"][0], tmp_path / "out" / "renamed.flac.wav")
    decisions = {d.source.stem: d for d in plan_resume(pairs.values(), rows, "h")}
    assert {k for k, d in decisions.items() if d.reuse} == {"ok"}
    assert decisions["other_settings"].reason == "made with other settings"
    assert decisions["changed_input"].reason == "input changed"
    assert decisions["zero_length"].reason == decisions["corrupt"].reason == "output missing or damaged"
    assert decisions["failed"].reason == "last run: failed"
    assert decisions["renamed"].reason == "output name changed"
    assert decisions["new"].reason == ""


def test_input_lists(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("path\nsub/a.wav\n/abs/b.wav\n")
    assert read_input_list(tmp_path / "l.csv") == [tmp_path / "sub" / "a.wav", Path("/abs/b.wav")]
    (tmp_path / "bad.csv").write_text("file\na.wav\n")
    with pytest.raises(ValueError, match="'path' column"):
        read_input_list(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl or \.parquet"):
        read_input_list(tmp_path / "l.txt")


def test_parquet_input_list(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a.wav", "/abs/b.wav"], "speaker": [1, 2]}), tmp_path / "l.parquet")
    assert read_input_list(tmp_path / "l.parquet") == [tmp_path / "a.wav", Path("/abs/b.wav")]
