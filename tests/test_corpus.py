"""Corpus runs on Ray: listing, manifest rows and the resume rule (fast, no Ray), then the real thing on
loopback: a two-node Ray cluster started here with ``ray start`` (one node killed mid-run), an S3 server
(moto) for s3:// input and output, and a kill -9 of a whole run followed by a resume.

Every process a test starts runs in its own session and is SIGKILLed by session id in a ``finally``:
nothing is stopped by name (``ray stop`` would stop other people's clusters on a shared machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from conftest import shared_path
from corpus_harness import (
    RAY_ENV,
    RayCluster,
    kill_session,
    loopback_cluster,
    loopback_env,
    make_clips,
    moto_s3,
    run_corpus_cli,
    session_alive,
    start_corpus_cli,
    wait_rows,
)

from denoise.corpus.driver import CorpusOptions, files_per_call
from denoise.corpus.records import (
    DONE,
    ManifestWriter,
    effective_settings,
    is_done,
    latest_rows,
    read_manifest,
    settings_hash,
)
from denoise.corpus.storage import list_inputs, output_intact, target_for
from denoise.corpus.worker import CorpusJob, EnhanceActor, process_item
from denoise.engine import Denoiser, DenoiserConfig

GTCRN = DenoiserConfig(model="gtcrn", weights="default", threads=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gtcrn_weights() -> None:
    if not os.environ.get("DENOISE_WEIGHTS_MIRROR"):
        os.environ["DENOISE_WEIGHTS_MIRROR"] = str(shared_path("weights"))


# ------------------------------------------------------------------------------------ fast, no Ray


def test_inputs_from_folder_glob_and_manifests(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    pytest.importorskip("pyarrow")
    root = tmp_path / "in"
    for name in ("a.wav", "sub/b.flac", "sub/.hidden.wav", ".cache/c.wav", "notes.txt", "out/d.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * 10)
    folder = list_inputs(str(root), {}, exclude=str(root / "out"))
    assert [i.rel for i in folder] == ["a.wav", "sub/b.flac"]
    assert folder[0].input == str(root / "a.wav") and folder[0].input_size == 10
    assert [i.rel for i in list_inputs(str(root / "sub" / "*.flac"), {})] == ["b.flac"]
    assert [i.rel for i in list_inputs(str(root / "a.wav"), {})] == ["a.wav"]
    # manifests: relative paths resolve beside the table; names mirror below the common folder
    (root / "list.csv").write_text("path,speaker\na.wav,1\nsub/b.flac,2\n")
    (root / "list.jsonl").write_text(json.dumps({"path": str(root / "sub" / "b.flac")}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [str(root / "a.wav"), "sub/b.flac"]}), root / "list.parquet")
    for table in ("list.csv", "list.parquet"):
        assert [(i.input, i.rel) for i in list_inputs(str(root / table), {})] == [
            (str(root / "a.wav"), "a.wav"),
            (str(root / "sub" / "b.flac"), "sub/b.flac"),
        ]
    assert [i.rel for i in list_inputs(str(root / "list.jsonl"), {})] == ["b.flac"]
    (root / "bad.csv").write_text("file\na.wav\n")
    with pytest.raises(RuntimeError, match="no 'path' column"):
        list_inputs(str(root / "bad.csv"), {})
    assert target_for("s3://b/out", "sub/b.flac", ".wav") == "s3://b/out/sub/b.wav"


def test_manifest_rows_survive_a_torn_line_and_resume_rule(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path) as writer:
        writer.append({"input": "a", "status": DONE})
        writer.append({"input": "b", "status": "failed"})
    with path.open("ab") as f:
        f.write(b'{"input": "c", "sta\n')  # a row a crash garbled
    with ManifestWriter(path) as writer:
        writer.append({"input": "a", "status": "failed"})
    rows = read_manifest(path)
    assert [r["input"] for r in rows] == ["a", "b", "a"]
    assert latest_rows(rows)["a"]["status"] == "failed"  # later rows supersede earlier ones

    item = {"input": "x", "input_size": 5, "input_mtime_ns": 1, "output": "o"}
    row = {**item, "status": DONE, "settings_hash": "h"}
    assert is_done(row, item, "h", output_intact=True)
    assert not is_done(row, item, "h", output_intact=False)
    assert not is_done(row, item, "other", output_intact=True)
    assert not is_done({**row, "status": "failed"}, item, "h", output_intact=True)
    assert not is_done(row, {**item, "input_mtime_ns": 2}, "h", output_intact=True)
    assert not is_done(None, item, "h", output_intact=True)


def test_settings_hash_follows_what_changes_the_output(gtcrn_weights: None) -> None:
    base = settings_hash(effective_settings(GTCRN, subtype=None, suffix=None))
    same = DenoiserConfig(model="gtcrn", weights="gtcrn_dns3_stream", threads=4, device="cpu")
    assert settings_hash(effective_settings(same, subtype=None, suffix=None)) == base  # name vs "default"
    for other in (
        effective_settings(DenoiserConfig(model="gtcrn", weights="gtcrn_dns3"), subtype=None, suffix=None),
        effective_settings(DenoiserConfig(model="gtcrn", atten_lim_db=12.0), subtype=None, suffix=None),
        effective_settings(GTCRN, subtype="PCM_24", suffix=None),
    ):
        assert settings_hash(other) != base


def test_one_item_on_a_worker_equals_enhance_file(tmp_path: Path, gtcrn_weights: None) -> None:
    (clip,) = make_clips(tmp_path / "in", 1)
    denoiser = Denoiser(GTCRN)
    job = CorpusJob(settings_hash="h", weights_sha256="w")
    item = {
        "input": str(clip),
        "input_size": 1,
        "input_mtime_ns": 2,
        "output": str(tmp_path / "out" / "c.wav"),
    }
    record = process_item(denoiser, item, job)
    assert record["status"] == DONE, record["reason"]
    denoiser.enhance_file(clip, tmp_path / "ref.wav")
    out = Path(item["output"])
    assert _sha(out) == _sha(tmp_path / "ref.wav") == record["output_sha256"]
    assert record["output_size"] == out.stat().st_size and record["channels"] == 1
    assert output_intact(item["output"], record, {})
    out.write_bytes(out.read_bytes()[:-2] + b"\0\1")  # same size, other bytes
    assert not output_intact(item["output"], record, {})
    bad = process_item(denoiser, {**item, "input": str(tmp_path / "missing.wav")}, job)
    assert bad["status"] == "failed" and bad["reason"] and "\n" not in bad["reason"]


def test_a_gpu_actor_denoises_its_batch_side_by_side_with_the_same_bytes(
    tmp_path: Path, gtcrn_weights: None
) -> None:
    """The GPU actor's logic on the CPU: batch_size 4 puts a BatchGate in front of the network; a batch of
    files shares its calls and gives the bytes the same actor gives one file per call."""
    clips = make_clips(tmp_path / "in", 6)
    config = asdict(replace(GTCRN, device="cpu", batch_size=4))
    job = asdict(CorpusJob(settings_hash="h", weights_sha256="w"))
    items = [{"input": str(c), "input_size": 1, "input_mtime_ns": 2} for c in clips]

    def run(folder: str, batches: list[list[dict]]) -> tuple[list[dict], int]:
        actor = EnhanceActor(config, job)
        records = []
        for batch in batches:
            rows = [{**item, "output": str(tmp_path / folder / Path(item["input"]).name)} for item in batch]
            columns = {key: [row[key] for row in rows] for key in rows[0]}
            records += [json.loads(r) for r in actor(columns)["record"]]
        return records, actor.denoiser.backend.stats.shared

    together, shared = run("together", [items])
    alone, _ = run("alone", [[item] for item in items])
    assert shared > 0, "the batch's files shared network calls"
    assert [r["input"] for r in together] == [item["input"] for item in items]  # rows keep their order
    assert all(r["status"] == DONE for r in together + alone)
    assert [r["output_sha256"] for r in together] == [r["output_sha256"] for r in alone]
    cpu = CorpusOptions(input="in", output="out")
    assert files_per_call(DenoiserConfig(), cpu) == 1
    assert files_per_call(DenoiserConfig(), replace(cpu, gpus_per_worker=0.5)) == 16
    assert files_per_call(DenoiserConfig(batch_size=4), cpu) == 8


@pytest.mark.slow  # DNSMOS models load in ~10-30 s on a busy 2-core box
def test_score_records_dnsmos_before_and_after(tmp_path: Path, gtcrn_weights: None) -> None:
    pytest.importorskip("speechmos")
    (clip,) = make_clips(tmp_path / "in", 1)
    job = CorpusJob(settings_hash="h", weights_sha256="w", score=True, hash_inputs=True)
    item = {"input": str(clip), "input_size": 1, "input_mtime_ns": 2, "output": str(tmp_path / "o.wav")}
    record = process_item(Denoiser(GTCRN), item, job)
    assert record["status"] == DONE, record["reason"]
    assert record["input_sha256"] == _sha(clip)
    for name in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        assert 1.0 <= record[f"{name}_before"] <= 5.0 and 1.0 <= record[f"{name}_after"] <= 5.0
    assert record["dnsmos_bak_after"] > record["dnsmos_bak_before"]  # the noise went down


# ------------------------------------------------------------------------------------ real processes


@pytest.fixture(scope="module")
def cluster_env(gtcrn_weights: None) -> dict[str, str]:
    pytest.importorskip("ray")
    pytest.importorskip("s3fs")
    return loopback_env()


@pytest.fixture(scope="module")
def ray_head(cluster_env: dict[str, str]) -> Iterator[RayCluster]:
    with loopback_cluster(cluster_env) as cluster:
        yield cluster


@pytest.fixture
def moto_server(cluster_env: dict[str, str]) -> Iterator[str]:
    pytest.importorskip("moto")
    with moto_s3(cluster_env) as endpoint:
        yield endpoint


def reference_outputs(clips: list[Path], root: Path, folder: Path) -> dict[str, str]:
    """sha256 of the single-machine ``Denoiser.enhance_file`` output per relative name."""
    denoiser = Denoiser(GTCRN)
    result = {}
    for clip in clips:
        rel = clip.relative_to(root).as_posix()
        denoiser.enhance_file(clip, folder / rel)
        result[rel] = _sha(folder / rel)
    return result


def assert_one_intact_row_per_input(
    rows: list[dict], inputs: list[Path], root: Path, out: Path, ref: dict
) -> None:
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in inputs)  # exactly one row each
    for row in rows:
        assert row["status"] == DONE, row
        rel = Path(row["input"]).relative_to(root).as_posix()
        assert row["output"] == str(out / rel)
        assert _sha(out / rel) == row["output_sha256"] == ref[rel]  # intact and bit-identical
    assert not [p for p in out.rglob(".denoise-tmp-*")]


@pytest.mark.slow
def test_two_node_cluster_survives_losing_a_node(ray_head: RayCluster, tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "in", 60)
    ref = reference_outputs(clips, tmp_path / "in", tmp_path / "ref")
    worker_sid = ray_head.add_node()
    out, manifest = tmp_path / "out", tmp_path / "run.jsonl"
    args = [
        "-i",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--manifest",
        str(manifest),
        "--address",
        ray_head.address,
    ]
    # Two actors of half a CPU each: one per node while both live, and the head can take both after.
    args += ["--workers", "2", "--cpus-per-worker", "0.5"]
    proc = start_corpus_cli(args, ray_head.env)
    try:
        rows = wait_rows(manifest, 4, proc, nodes=2)  # both nodes at work
        assert proc.poll() is None, proc.communicate()
        nodes_before = {r["node"] for r in rows}
        kill_session(worker_sid)  # SIGKILL the worker node's raylet and its workers mid-run
        killed_at = len(rows)
        _, err = proc.communicate(timeout=400)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 0, err[-3000:]
    rows = read_manifest(manifest)
    assert_one_intact_row_per_input(rows, clips, tmp_path / "in", out, ref)
    assert killed_at < len(clips) and len(nodes_before) == 2
    # after the loss (and the few results already on their way to the driver), the head alone
    assert len({r["node"] for r in rows[killed_at + 8 :]}) == 1
    assert not session_alive(worker_sid)


@pytest.mark.slow
def test_s3_in_and_out(ray_head: RayCluster, moto_server: str, tmp_path: Path, monkeypatch) -> None:
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, RAY_ENV[key])
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="corpus")
    clips = make_clips(tmp_path / "in", 6)
    ref = reference_outputs(clips, tmp_path / "in", tmp_path / "ref")
    for clip in clips:
        s3.upload_file(str(clip), "corpus", "noisy/" + clip.relative_to(tmp_path / "in").as_posix())
    manifest = tmp_path / "run.jsonl"
    args = ["-i", "s3://corpus/noisy", "-o", "s3://corpus/clean", "--manifest", str(manifest)]
    args += ["--address", ray_head.address, "--storage-option", f"endpoint_url={moto_server}"]
    done = run_corpus_cli(args, ray_head.env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_manifest(manifest)
    assert sorted(r["input"] for r in rows) == sorted(f"s3://corpus/noisy/{rel}" for rel in ref)
    listed = s3.list_objects_v2(Bucket="corpus", Prefix="clean/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"clean/{rel}" for rel in ref)  # no partial/temp keys
    for row in rows:
        rel = row["input"].removeprefix("s3://corpus/noisy/")
        body = s3.get_object(Bucket="corpus", Key=f"clean/{rel}")["Body"].read()
        assert row["status"] == DONE and row["output"] == f"s3://corpus/clean/{rel}"
        assert hashlib.sha256(body).hexdigest() == row["output_sha256"] == ref[rel]
    again = run_corpus_cli(args, ray_head.env)  # everything done and intact: nothing to do, no Ray job
    assert again.returncode == 0 and "skipped 6" in again.stderr
    assert len(read_manifest(manifest)) == len(rows)


@pytest.mark.slow
def test_resume_after_kill_9_redoes_only_what_is_not_intact(ray_head: RayCluster, tmp_path: Path) -> None:
    root, out, manifest = tmp_path / "in", tmp_path / "out", tmp_path / "run.jsonl"
    clips = make_clips(root, 16)
    ref = reference_outputs(clips, root, tmp_path / "ref")
    args = ["-i", str(root), "-o", str(out), "--manifest", str(manifest), "--address", ray_head.address]
    proc = start_corpus_cli(args, ray_head.env, capture=False)
    try:
        wait_rows(manifest, 5, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run: driver and its process group
        proc.wait(timeout=30)
    finally:
        kill_session(proc.pid)
    first = latest_rows(read_manifest(manifest))
    assert 5 <= len(first) < len(clips), "the kill came too late to test a resume"
    done_before = sorted(first)
    truncated, other = Path(first[done_before[0]]["output"]), Path(first[done_before[1]]["output"])
    truncated.write_bytes(b"")  # a power cut's zero-length "done" file
    # an output made with other settings (and recorded as such)
    stronger = DenoiserConfig(model="gtcrn", weights="default", threads=1, atten_lim_db=6.0)
    Denoiser(stronger).enhance_file(done_before[1], other)
    with ManifestWriter(manifest) as writer:
        row = first[done_before[1]]
        writer.append(
            {
                **row,
                "settings_hash": settings_hash(effective_settings(stronger, subtype=None, suffix=None)),
                "output_sha256": _sha(other),
                "output_size": other.stat().st_size,
            }
        )
    untouched = {p: Path(first[p]["output"]).stat().st_mtime_ns for p in done_before[2:]}
    rows_before = len(read_manifest(manifest))

    resumed = run_corpus_cli(args, ray_head.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new = read_manifest(manifest)[rows_before:]
    redo = {str(c) for c in clips} - set(done_before[2:])
    assert sorted(r["input"] for r in new) == sorted(
        redo
    )  # only the missing, truncated and other-settings ones
    assert {p: Path(first[p]["output"]).stat().st_mtime_ns for p in done_before[2:]} == untouched
    final = latest_rows(read_manifest(manifest))
    assert_one_intact_row_per_input(list(final.values()), clips, root, out, ref)
    assert f"skipped {len(untouched)}" in resumed.stderr
