"""The storage layer on a real S3-compatible server: atomic parts, listings, the run lock as a lease, errors."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import time

import pyarrow as pa
import pytest

from pipeline.core import lock
from pipeline.core.lock import LOCK_FILE, OutputLocked, output_lock
from pipeline.core.parts import PartWriter, done_parts, is_done, read_documents
from pipeline.core.schema import DOCUMENT_SCHEMA
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    StorageError,
    check_writable,
    download_files,
    is_remote,
    list_files,
    list_names,
    location,
    read_files,
    remove_tree,
    write_bytes_atomic,
    write_files,
)
from tests.objectstore import SeaweedServer


def _documents(n: int, prefix: str = "d") -> pa.Table:
    rows = {name: [None] * n for name in DOCUMENT_SCHEMA.names}
    rows["id"] = [f"{prefix}{i}" for i in range(n)]
    rows["text"] = [f"text {i}" for i in range(n)]
    return pa.Table.from_pydict(rows, schema=DOCUMENT_SCHEMA)


def test_locations_local_and_remote(tmp_path) -> None:  # noqa: ANN001
    assert location(str(tmp_path)) == tmp_path and not is_remote(tmp_path)
    assert location(f"file://{tmp_path}") == tmp_path
    remote = location("s3://bucket/prefix")
    assert is_remote(remote) and str(remote / "a" / "b.json") == "s3://bucket/prefix/a/b.json"
    with pytest.raises(StorageError, match="no storage backend for scheme 'nope'"):
        location("nope://x/y")


def test_a_part_is_invisible_until_committed_and_an_aborted_one_leaves_nothing(bucket: str, s3_env) -> None:  # noqa: ANN001
    out = location(f"{bucket}/pass")
    fs = s3_env.filesystem()
    with PartWriter(out, "part-00000") as writer:
        writer.write(_documents(5))
        assert fs.find(out.path) == [], "a part is visible before its commit"
        writer.commit(PartStats(part="part-00000"))
    assert is_done(out, "part-00000")
    with pytest.raises(RuntimeError), PartWriter(out, "part-00001") as writer:
        writer.write(_documents(3, "x"))
        raise RuntimeError("the worker failed mid-part")
    assert done_parts(out) == ["part-00000"]
    assert sorted(p.rsplit("/", 2)[-2] for p in fs.find(out.path)) == ["documents", "markers", "stats"]
    assert read_documents(out).column("id").to_pylist() == [f"d{i}" for i in range(5)]
    # a rerun of an unfinished part first removes what an earlier attempt published before dying
    write_bytes_atomic(out / "documents" / "part-00001.parquet", b"half of a killed attempt")
    with PartWriter(out, "part-00001") as writer:
        assert not (out / "documents" / "part-00001.parquet").exists()
        writer.write(_documents(2, "y"))
        writer.commit(PartStats(part="part-00001"))
    assert sorted(read_documents(out).column("id").to_pylist()) == sorted([f"d{i}" for i in range(5)] + ["y0", "y1"])


def test_listings_and_batched_reads(bucket: str, s3_env) -> None:  # noqa: ANN001
    folder = location(f"{bucket}/many")
    for i in range(30):
        write_bytes_atomic(folder / f"part-{i:05d}.json", json.dumps({"i": i}).encode())
    write_bytes_atomic(folder / ".hidden", b"x")
    names = list_names(folder, ".json", "part-")
    assert names == [f"part-{i:05d}.json" for i in range(30)]
    infos = list_files(folder)
    assert set(infos) == set(names) and all(info.size > 0 and info.tag for info in infos.values())
    contents = read_files([folder / n for n in names] + [folder / "missing.json"])
    assert [json.loads(c)["i"] for c in contents[:-1]] == list(range(30))
    assert isinstance(contents[-1], Exception)
    remove_tree(folder)
    assert list_names(folder) == []


def test_check_writable_names_the_problem(object_store: SeaweedServer, bucket: str, monkeypatch) -> None:  # noqa: ANN001
    check_writable(location(f"{bucket}/ok"))
    with pytest.raises(StorageError, match="bucket does not exist"):
        check_writable(location("s3://no-such-bucket-core/x"))
    from tests.objectstore import READER_KEY, READER_SECRET, forget_clients

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    forget_clients()
    with pytest.raises(StorageError, match="access denied") as refused:
        check_writable(location(f"{bucket}/ro"))
    assert READER_SECRET not in str(refused.value)


def _hold_lock(url: str, env: dict[str, str], ready, release) -> None:  # noqa: ANN001
    os.environ.update(env)
    with output_lock(url, "run"):
        ready.set()
        release.wait(120)


def test_the_run_lock_on_a_store_is_a_lease(object_store: SeaweedServer, bucket: str, caplog) -> None:  # noqa: ANN001
    url = f"{bucket}/runs/one"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(url, object_store.env(), ready, release))
    holder.start()
    try:
        assert ready.wait(120), "the first run never took the lock"
        with pytest.raises(OutputLocked, match=rf"in use by another run: pid {holder.pid} on"), output_lock(url):
            pass
    finally:
        release.set()
        holder.join(60)
    assert not (location(url) / LOCK_FILE).exists(), "a released lease is removed"

    # a lease left by a process that died on this host is taken over at once, with a warning
    dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "started": time.time(), "what": "run",
            "command": "refinery run", "token": "old", "renewed": time.time()}  # fmt: skip
    write_bytes_atomic(location(url) / LOCK_FILE, json.dumps(dead).encode())
    with caplog.at_level(logging.WARNING), output_lock(url, "run"):
        assert "taking over the lock" in caplog.text
    # another host's lease is respected until it is not renewed for LEASE_S
    other = {**dead, "host": "some-other-host", "pid": 1}
    write_bytes_atomic(location(url) / LOCK_FILE, json.dumps(other).encode())
    with pytest.raises(OutputLocked, match="some-other-host"), output_lock(url, "run"):
        pass
    write_bytes_atomic(
        location(url) / LOCK_FILE, json.dumps({**other, "renewed": time.time() - lock.LEASE_S - 1}).encode()
    )
    with output_lock(url, "run"):
        pass


def test_a_run_config_read_from_the_store_keeps_its_storage_options_out_of_dumps(
    bucket: str,
    s3_env,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import fsspec.config

    from pipeline.app.config import ConfigError, load_config
    from pipeline.core import storage
    from pipeline.core.storage import storage_config

    # loading installs the options process-wide: undo that after the test
    monkeypatch.setattr(fsspec.config, "conf", {k: dict(v) for k, v in fsspec.config.conf.items()})
    monkeypatch.setattr(storage, "_configured", {})
    url = f"{bucket}/configs/run.yaml"
    options = {"s3": {"endpoint_url": s3_env.endpoint}, "gcs": {"token": "planted-SECRET-in-config"}}
    write_bytes_atomic(location(url), json.dumps({"name": "from-store", "storage_options": options}).encode())
    config = load_config(url)
    assert config.name == "from-store" and config.storage_options == options
    assert storage_config()["s3"]["endpoint_url"] == s3_env.endpoint
    assert "planted-SECRET" not in json.dumps(config.model_dump(mode="json")) + repr(config)
    with pytest.raises(ConfigError, match="not found"):
        load_config(f"{bucket}/configs/missing.yaml")


def test_many_files_written_and_fetched_concurrently(bucket: str, s3_env, tmp_path) -> None:  # noqa: ANN001
    folder = location(f"{bucket}/batch")
    write_files({folder / f"part-{i:05d}.bin": bytes([i]) * 10 for i in range(12)})
    assert list_names(folder) == [f"part-{i:05d}.bin" for i in range(12)]
    local = tmp_path / "disk.bin"
    local.write_bytes(b"on disk")
    copies = download_files([folder / "part-00003.bin", local, folder / "part-00007.bin"], tmp_path / "copies")
    assert copies == [tmp_path / "copies" / "part-00003.bin", local, tmp_path / "copies" / "part-00007.bin"]
    assert [c.read_bytes() for c in copies] == [b"\x03" * 10, b"on disk", b"\x07" * 10]
    write_files({tmp_path / "out" / "a.json": b"{}"})
    assert (tmp_path / "out" / "a.json").read_bytes() == b"{}"


def test_s3_clients_share_one_botocore_loader_and_one_instance_cache(bucket: str, s3_env) -> None:  # noqa: ANN001
    import pickle

    import s3fs

    from pipeline.core.s3 import SharedLoaderS3FileSystem, s3_loader

    path = location(f"{bucket}/x.json")
    write_bytes_atomic(path, b"{}")
    fs = path.fs
    assert isinstance(fs, SharedLoaderS3FileSystem) and fs.session is not None
    other = location(f"{bucket}/y.json").fs
    assert other is fs
    assert fs.session.get_component("data_loader") is s3_loader()
    assert pickle.loads(pickle.dumps(fs)).cat_file(path.path) == b"{}"  # a Spark task gets a working copy
    s3fs.S3FileSystem.clear_instance_cache()  # what callers (and the tests) do when the environment changed
    assert location(f"{bucket}/x.json").fs is not fs


def test_a_part_is_done_from_one_request(bucket: str, s3_env, tmp_path) -> None:  # noqa: ANN001
    from pipeline.engines.base import part_done

    for out in (location(f"{bucket}/run"), tmp_path):
        assert not part_done(out, "part-00000")
        with PartWriter(out, "part-00000") as writer:
            writer.write(_documents(2))
            writer.commit(PartStats(part="part-00000"))
        assert part_done(out, "part-00000") and not part_done(out, "part-00001")


def test_a_pass_listing_skips_clearing_unwritten_parts_and_a_failed_commit_still_cleans_up(
    bucket: str, s3_env, monkeypatch  # noqa: ANN001
) -> None:  # fmt: skip
    from pipeline.core import parts

    out = location(f"{bucket}/listed")
    fs = s3_env.filesystem()
    write_bytes_atomic(out / "documents" / "part-00001.parquet", b"half of a killed attempt")
    removed: list[str] = []
    real_remove = parts.remove
    monkeypatch.setattr(parts, "remove", lambda path: (removed.append(path.name), real_remove(path)))
    with parts.pass_listing(out):
        with PartWriter(out, "part-00000") as writer:  # nothing of it listed: no DELETE
            writer.write(_documents(2))
            writer.commit(PartStats(part="part-00000"))
        assert removed == []
        with PartWriter(out, "part-00001") as writer:  # listed with a leftover: cleared for real
            assert not (out / "documents" / "part-00001.parquet").exists()
            writer.write(_documents(1, "y"))
            writer.commit(PartStats(part="part-00001"))
        assert "part-00001.parquet" in removed
        # a commit failing after its documents and stats went up removes them, though the listing showed nothing
        real_write = parts.write_bytes_atomic

        def failing_marker(path, data):  # noqa: ANN001, ANN202
            if path.parent.name == "markers":
                raise OSError("the store failed")
            return real_write(path, data)

        monkeypatch.setattr(parts, "write_bytes_atomic", failing_marker)
        with pytest.raises(OSError, match="store failed"), PartWriter(out, "part-00002") as writer:
            writer.write(_documents(3, "z"))
            writer.commit(PartStats(part="part-00002"))
        monkeypatch.setattr(parts, "write_bytes_atomic", real_write)
        # an upload failing beside the others: nothing of the part stays, no marker
        monkeypatch.setattr(parts, "publish", lambda tmp, path: (_ for _ in ()).throw(OSError("upload failed")))
        with pytest.raises(OSError, match="upload failed"), PartWriter(out, "part-00003") as writer:
            writer.write(_documents(1, "w"))
            writer.commit(PartStats(part="part-00003"))
    names = sorted(p.split("/listed/", 1)[1] for p in fs.find(out.path))
    assert names == [f"{folder}/part-0000{i}.{ext}" for folder, ext in
                     (("documents", "parquet"), ("markers", "done"), ("stats", "json")) for i in (0, 1)]  # fmt: skip
    assert done_parts(out) == ["part-00000", "part-00001"]
    assert sorted(read_documents(out).column("id").to_pylist()) == ["d0", "d1", "y0"]
    assert list_names(out / "rejected") == [] and list_files(out / "nothing-here") == {}


def test_a_new_lease_on_s3_is_a_conditional_create_with_no_settle(bucket: str, s3_env, monkeypatch) -> None:  # noqa: ANN001
    url = f"{bucket}/runs/exclusive"
    slept: list[float] = []
    monkeypatch.setattr(lock, "settle", slept.append)  # not time.sleep: other threads of the session sleep too
    with output_lock(url, "run"):
        assert slept == [], "the store honours If-None-Match: no settle needed"
        # a run that read "free" at the same moment loses the create
        with pytest.raises(OutputLocked, match=r"in use by another dedup: pid \d+ on"):
            lock._create_exclusive(location(url) / LOCK_FILE, b"{}", "dedup")
    assert not (location(url) / LOCK_FILE).exists()
    write_bytes_atomic(location(url) / LOCK_FILE, b"not a lease")  # an unreadable leftover is written over
    with output_lock(url, "run"):
        assert slept == [lock.LEASE_SETTLE_S]


def test_a_part_above_the_multipart_threshold_appears_whole_and_leaves_no_upload(
    bucket: str, s3_env, tmp_path, monkeypatch  # noqa: ANN001
) -> None:  # fmt: skip
    """s3fs's ``put_file`` (what ``publish`` calls) switches to a multipart upload at twice its chunk size
    (2 x 50 MiB; ``default_block_size`` does not change it): every other test object is one PUT. Here the key
    stays empty while the parts are up and the upload not completed, the object is then whole, and a commit
    that fails mid-upload leaves no object, no temp file and no unfinished upload on the store."""
    import hashlib

    from s3fs.core import calculate_chunksize

    from pipeline.core.storage import write_file_atomic

    monkeypatch.setenv("REFINERY_SCRATCH", str(tmp_path / "scratch"))
    size = 2 * calculate_chunksize(2**30) + 2**20  # 101 MiB: parts of 50, 50 and 1 MiB
    digest = hashlib.sha256()

    def write(f) -> None:  # noqa: ANN001 - incompressible bytes, 4 MiB at a time
        for start in range(0, size, 4 * 2**20):
            block = os.urandom(min(4 * 2**20, size - start))
            digest.update(block)
            f.write(block)

    target = location(f"{bucket}/tokens/shard-00000.bin")
    name, key = target.path.split("/", 1)
    fs = s3_env.filesystem()
    cls = type(target.fs)
    upload_parts = cls._upload_file_part_concurrent
    seen: list[tuple] = []

    async def watched(self, bucket_, key_, mpu, *args, **kwargs):  # noqa: ANN001, ANN202
        out = await upload_parts(self, bucket_, key_, mpu, *args, **kwargs)
        listed = await self._call_s3("list_objects_v2", Bucket=bucket_, Prefix=key_)
        uploads = await self._call_s3("list_multipart_uploads", Bucket=bucket_)
        seen.append((len(out), listed.get("KeyCount", 0), [u["Key"] for u in uploads.get("Uploads", [])]))
        return out

    monkeypatch.setattr(cls, "_upload_file_part_concurrent", watched)
    write_file_atomic(target, write)
    assert seen == [(3, 0, [key])], "not a multipart upload, or the object was visible before it completed"
    assert fs.size(target.path) == size
    on_store = hashlib.sha256()
    with fs.open(target.path, "rb", block_size=8 * 2**20) as f:
        while block := f.read(8 * 2**20):
            on_store.update(block)
    assert on_store.hexdigest() == digest.hexdigest()
    assert fs.list_multipart_uploads(name) == [] and list(os.scandir(tmp_path / "scratch")) == []

    async def failing(self, bucket_, key_, mpu, f0, *args, **kwargs):  # noqa: ANN001, ANN202
        await self._call_s3("upload_part", Bucket=bucket_, Key=key_, UploadId=mpu["UploadId"], PartNumber=1,
                            Body=f0.read(5 * 2**20))  # fmt: skip
        uploads = await self._call_s3("list_multipart_uploads", Bucket=bucket_)
        seen.append(tuple(u["Key"] for u in uploads.get("Uploads", [])))
        raise OSError("the connection dropped mid-upload")

    monkeypatch.setattr(cls, "_upload_file_part_concurrent", failing)
    broken = location(f"{bucket}/tokens/shard-00001.bin")
    with pytest.raises(OSError, match="dropped mid-upload"):
        write_file_atomic(broken, lambda f: f.truncate(size))  # as big, but sparse: quick to write
    assert seen[1:] == [(broken.path.split("/", 1)[1],)], "the failed upload was never under way"
    assert not fs.exists(broken.path) and fs.list_multipart_uploads(name) == [], "the failed upload is left"
    assert list(os.scandir(tmp_path / "scratch")) == []
