"""Corpus runs on Ray: listing, manifest rows and the resume rule (fast, no Ray), then the real thing on
loopback: a two-node Ray cluster started here with ``ray start`` (one node killed mid-run), an S3 server
(moto) for s3:// input and output, and a kill -9 of a whole run followed by a resume.

Every process a test starts runs in its own session and is SIGKILLed by session id in a ``finally``:
nothing is stopped by name (``ray stop`` would stop other people's clusters on a shared machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from conftest import REPO, shared_path

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
from denoise.corpus.worker import CorpusJob, process_item
from denoise.engine import Denoiser, DenoiserConfig
from denoise_models.atomic import atomic_write_bytes

GTCRN = DenoiserConfig(model="gtcrn", weights="default", threads=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_clips(folder: Path, count: int, *, seconds: float = 1.0) -> list[Path]:
    """``count`` short real clips cut from the VoiceBank-DEMAND noisy test set (mixed rates, written now)."""
    sources = sorted(shared_path("eval", "vbd", "noisy").glob("*.wav"))
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(count):
        audio, rate = sf.read(sources[k % len(sources)], dtype="float32")
        start = (k // len(sources)) * int(seconds * rate)
        clip = folder / f"sub{k % 3}" / f"clip_{k:03d}.wav"
        clip.parent.mkdir(exist_ok=True)
        sf.write(clip, audio[start : start + int(seconds * rate)], rate, subtype="PCM_16")
        clips.append(clip)
    return clips


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (what a test started, and nothing else)."""
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                proc.kill()


def session_alive(sid: int) -> bool:
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Keep every address on loopback: Ray otherwise swaps 127.0.0.1 for the host's routable address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A busy 2-core CI box starts Python processes slowly; give workers time to register.
    "RAY_worker_register_timeout_seconds": "300",
    "RAY_agent_register_timeout_ms": "300000",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _node_ports() -> dict[str, int]:
    names = (
        "node-manager",
        "object-manager",
        "dashboard-agent-listen",
        "dashboard-agent-grpc",
        "runtime-env-agent",
    )
    return {f"--{name}-port": free_port() for name in (*names, "metrics-export")}


def _announce_agent_ports(temp_dir: Path, node_id: str, runtime_env_port: int, stop: threading.Event) -> None:
    """Write the agent port files the raylet waits for, as soon as the session folder exists.

    The raylet gives its Python agents a fixed 30 s to start and announce their ports, then aborts; on a
    CPU-starved CI box their imports alone take longer. The runtime-env agent is started on a port we
    chose, so that one is known; the dashboard agent's HTTP and metrics services are not used here and
    are announced as off (-1). The agents later write the same files themselves.
    """
    values = {
        "runtime_env_agent_port": runtime_env_port,
        "dashboard_agent_listen_port": -1,
        "metrics_agent_port": -1,
        "metrics_export_port": -1,
    }
    while not stop.wait(0.05):
        for session in temp_dir.glob("session_2*"):
            for name, value in values.items():
                target = session / f"{name}_{node_id}"
                if not target.exists():
                    with contextlib.suppress(OSError):
                        atomic_write_bytes(target, str(value).encode())


# `ray start` with loopback kept as loopback. Ray replaces 127.0.0.1 by the host's routable address, and
# only its single-node switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) stops that, which `ray start --address`
# then refuses; so the joining node gets the cluster switch on and an identity address resolver.
RAY_START = (
    "import sys, ray._private.ray_constants as c, ray._private.services as s;"
    "c.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda host: host;"
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


def ray_start(args: list[str], temp_dir: Path, env: dict[str, str], attempts: int = 3) -> int:
    """Run ``ray start`` in a new session; returns the session id its daemons live in."""
    last = ""
    for _ in range(attempts):
        node_id = os.urandom(28).hex()
        ports = _node_ports()
        stop = threading.Event()
        announcer = threading.Thread(
            target=_announce_agent_ports,
            args=(temp_dir, node_id, ports["--runtime-env-agent-port"], stop),
            daemon=True,
        )
        announcer.start()
        log = temp_dir / f"ray-start-{node_id[:8]}.log"
        with log.open("w") as sink:  # not a pipe: the daemons inherit it and would hold it open
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RAY_START,
                    "start",
                    *args,
                    f"--temp-dir={temp_dir}",
                    "--disable-usage-stats",
                    *(f"{flag}={port}" for flag, port in ports.items()),
                ],
                env={**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop.set()
            announcer.join()
        if proc.returncode == 0:
            return proc.pid
        kill_session(proc.pid)  # a half-started node: its GCS/agents must not linger
        last = log.read_text()[-2000:]
    pytest.fail(f"ray start {' '.join(args[:2])} failed {attempts} times:\n{last}")


class RayCluster:
    """A head node and optional worker nodes on 127.0.0.1, each in its own session."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []

    def start_head(self) -> None:
        self.sessions.append(
            ray_start(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={self.port}",
                    "--num-cpus=1",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--ray-client-server-port={free_port()}",
                    "--include-log-monitor=false",
                ],
                self.root,
                self.env,
            )
        )

    def add_node(self) -> int:
        sid = ray_start(
            [f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
            self.root,
            self.env,
        )
        self.sessions.append(sid)
        return sid

    def kill_all(self) -> None:
        for sid in reversed(self.sessions):
            kill_session(sid)


@pytest.fixture(scope="module")
def cluster_env(gtcrn_weights: None) -> dict[str, str]:
    pytest.importorskip("ray")
    pytest.importorskip("s3fs")
    return {
        **os.environ,
        **RAY_ENV,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def ray_head(cluster_env: dict[str, str]) -> Iterator[RayCluster]:
    # Ray's socket paths must stay under 108 bytes: a short folder directly in the temp dir.
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    cluster = RayCluster(root, cluster_env)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def corpus_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "denoise", "corpus", "--model", "gtcrn", "--quiet", *args]


def run_corpus_cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        corpus_command(*args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_rows(
    manifest: Path, count: int, proc: subprocess.Popen, timeout: float = 300, nodes: int = 1
) -> list[dict]:
    """The manifest's rows once it has ``count`` of them from at least ``nodes`` Ray nodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_manifest(manifest)
        if (len(rows) >= count and len({r["node"] for r in rows}) >= nodes) or proc.poll() is not None:
            return rows
        time.sleep(0.2)
    pytest.fail(f"no {count} manifest rows within {timeout} s")


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
    proc = subprocess.Popen(
        corpus_command(*args),
        env=ray_head.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
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


@pytest.fixture
def moto_server(cluster_env: dict[str, str]) -> Iterator[str]:
    pytest.importorskip("moto")
    port = free_port()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        env=cluster_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        kill_session(proc.pid)


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
    proc = subprocess.Popen(
        corpus_command(*args),
        env=ray_head.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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
