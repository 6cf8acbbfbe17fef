"""Reading Common Crawl from an object store: the sample crawl in a bucket of a real S3 server (SeaweedFS).

The same listing and the same bytes must come out of ``s3://public-.../`` as out of the HTTP mirror, signed
with credentials and anonymously without; a missing dump, object or bucket, a refused access and an
unreachable store fail with one line naming the URL (and no secret); ``refinery stage`` reads WARC and
Parquet inputs from the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.app.config import SAMPLE_DUMP, ConfigError, load_config
from pipeline.app.stagerun import expand_inputs, run_stage
from pipeline.core.storage import StorageError, location
from pipeline.sources.commoncrawl import list_warc_paths
from pipeline.sources.download import DownloadError, NotGzipError, SourceTruncatedError, fetch_warc
from pipeline.sources.dumps import COLLINFO_URL, collinfo_url_for, newest_dump
from pipeline.sources.store import aws_credentials_available, source_filesystem
from tests.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedServer, free_ports
from tests.samples import WARC_PASS_ONLY, sample_config

FAST = {"retries": 1, "backoff_s": 0.01, "timeout_s": 10.0}
MISSING_DUMP = "CC-MAIN-2099-01"


@pytest.fixture(scope="module")
def public_bucket(object_store: SeaweedServer, sample_crawl) -> str:  # noqa: ANN001 - SampleCrawl
    """A ``public-*`` bucket (anonymously readable) holding the sample crawl in Common Crawl's layout."""
    name = object_store.create_bucket("public")
    object_store.filesystem().put(f"{sample_crawl.root}/", f"{name}/", recursive=True)
    return name


@pytest.fixture
def anonymous(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No credentials anywhere botocore looks (AWS_ENDPOINT_URL still points at the test store)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    assert not aws_credentials_available()
    yield


def _same_crawl_as_the_mirror(base_url: str, mirror_url: str, sample_crawl, tmp_path: Path) -> None:  # noqa: ANN001
    """The store's listing and WARC bytes are the HTTP mirror's, and the cache files are complete."""
    listed = list_warc_paths(base_url, SAMPLE_DUMP, **FAST)
    assert listed == list_warc_paths(mirror_url, SAMPLE_DUMP, **FAST) == sample_crawl.warc_paths
    for rel in listed[:2]:
        from_store = fetch_warc(base_url, rel, tmp_path / "store", **FAST)
        from_http = fetch_warc(mirror_url, rel, tmp_path / "http", **FAST)
        assert from_store == tmp_path / "store" / rel
        assert from_store.read_bytes() == from_http.read_bytes() == (sample_crawl.root / rel).read_bytes()
        assert from_store.with_name(from_store.name + ".complete").is_file()
        assert not from_store.with_name(from_store.name + ".partial").exists()
    assert newest_dump(base_url) == SAMPLE_DUMP


def test_listing_and_download_from_s3_with_credentials(
    s3_env: SeaweedServer,
    public_bucket: str,
    mirror_url: str,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    assert aws_credentials_available()
    base = f"s3://{public_bucket}/"
    fs, _ = source_filesystem(base)
    assert not fs.anon, "credentials are configured: requests are signed"
    _same_crawl_as_the_mirror(base, mirror_url, sample_crawl, tmp_path)

    rel = sample_crawl.warc_paths[0]
    dead_store = {"endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}"}
    again = fetch_warc(base, rel, tmp_path / "store", retries=0, storage_options=dead_store)
    assert again == tmp_path / "store" / rel, "a verified cached file is reused without asking the store"


def test_listing_and_download_from_s3_anonymously(
    anonymous: None,
    public_bucket: str,
    mirror_url: str,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    base = f"s3://{public_bucket}/"
    fs, _ = source_filesystem(base)
    assert fs.anon, "no credentials anywhere: the public bucket is read anonymously"
    _same_crawl_as_the_mirror(base, mirror_url, sample_crawl, tmp_path)


def test_a_private_bucket_read_anonymously_is_refused_clearly(
    object_store: SeaweedServer,
    anonymous: None,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    private = object_store.create_bucket("private")
    listing = f"crawl-data/{SAMPLE_DUMP}/warc.paths.gz"
    object_store.filesystem().put_file(str(sample_crawl.root / listing), f"{private}/{listing}")
    with pytest.raises(DownloadError) as err:
        list_warc_paths(f"s3://{private}/", SAMPLE_DUMP, **FAST)
    message = str(err.value)
    assert message.startswith(f"s3://{private}/{listing}: access denied")
    assert "read anonymously" in message and "\n" not in message
    assert err.value.status == 403


def test_source_storage_options_override_the_environment(
    s3_env: SeaweedServer,
    public_bucket: str,
    sample_crawl,  # noqa: ANN001
) -> None:
    base = f"s3://{public_bucket}/"
    assert list_warc_paths(base, SAMPLE_DUMP, storage_options={"anon": True}, **FAST) == sample_crawl.warc_paths
    wrong = {"key": ACCESS_KEY, "secret": "wrong-SECRET-0f3a"}
    with pytest.raises(DownloadError) as err:
        list_warc_paths(base, SAMPLE_DUMP, storage_options=wrong, **FAST)
    message = str(err.value)
    assert message.startswith(f"{base}crawl-data/{SAMPLE_DUMP}/warc.paths.gz: access denied")
    assert "wrong-SECRET" not in message and SECRET_KEY not in message

    config = load_config(overrides={"source.cc_base_url": base, "source.storage_options": wrong})
    assert config.source.storage_options == wrong
    recorded = str(config.model_dump(mode="json")) + repr(config)
    assert "wrong-SECRET" not in recorded, "source storage options are never written back"


def test_missing_dump_object_and_bucket_are_clear_errors(
    s3_env: SeaweedServer, public_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = f"s3://{public_bucket}/"
    listing = f"{base}crawl-data/{MISSING_DUMP}/warc.paths.gz"
    with pytest.raises(DownloadError, match=f"no listing for dump '{MISSING_DUMP}'.*check the dump id") as err:
        list_warc_paths(base, MISSING_DUMP, **FAST)
    assert listing in str(err.value) and err.value.status == 404

    caplog.set_level(logging.WARNING, logger="pipeline.sources.download")
    missing = f"crawl-data/{SAMPLE_DUMP}/segments/0/warc/missing.warc.gz"
    with pytest.raises(DownloadError) as err:
        fetch_warc(base, missing, tmp_path, **FAST)
    assert str(err.value) == f"{base}{missing}: not found" and err.value.status == 404
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], "a missing object is not retried"
    assert not (tmp_path / missing).exists() and not list(tmp_path.rglob("*.partial"))

    nowhere = "s3://no-such-bucket-3e7d1/"
    with pytest.raises(DownloadError) as err:
        list_warc_paths(nowhere, SAMPLE_DUMP, **FAST)
    assert str(err.value).startswith(f"{nowhere}crawl-data/{SAMPLE_DUMP}/warc.paths.gz: the bucket does not exist")
    with pytest.raises(DownloadError, match=f"{nowhere}crawl-data/: the bucket does not exist"):
        newest_dump(nowhere)


def test_an_unreachable_store_is_retried_then_named(
    s3_env: SeaweedServer, public_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.sources.download")
    dead = {"endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}", "config_kwargs": {"retries": {"max_attempts": 1}}}
    base = f"s3://{public_bucket}/"
    with pytest.raises(DownloadError) as err:
        list_warc_paths(base, SAMPLE_DUMP, retries=2, backoff_s=0.01, timeout_s=5.0, storage_options=dead)
    message = str(err.value)
    assert message.startswith(f"giving up on {base}crawl-data/{SAMPLE_DUMP}/warc.paths.gz after 3 failed attempts")
    assert "the store is unreachable" in message and SECRET_KEY not in message
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2


def test_stage_reads_warc_and_parquet_inputs_from_the_store(
    s3_env: SeaweedServer,
    public_bucket: str,
    bucket: str,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    config = sample_config(str(sample_crawl.root), tmp_path, "stage", {"keep_rejected": True})
    rel = sample_crawl.warc_paths[0]
    remote_warc = f"s3://{public_bucket}/{rel}"
    run_stage("extract", [remote_warc], tmp_path / "from-store", config, limit=40, progress=False)
    run_stage("extract", [sample_crawl.root / rel], tmp_path / "from-disk", config, limit=40, progress=False)
    from_store = pq.read_table(tmp_path / "from-store" / "documents")
    assert from_store.num_rows > 0
    assert from_store.equals(pq.read_table(tmp_path / "from-disk" / "documents"))

    segment = rel.rsplit("/", 1)[0]
    under = [str(p) for p in expand_inputs([f"s3://{public_bucket}/{segment}/"])]
    local = sorted(sample_crawl.root / p for p in sample_crawl.warc_paths if p.startswith(segment + "/"))
    assert under == [f"s3://{public_bucket}/{p.relative_to(sample_crawl.root)}" for p in local]
    with pytest.raises(FileNotFoundError, match=f"s3://{public_bucket}/nothing-here"):
        expand_inputs([f"s3://{public_bucket}/nothing-here/"])
    with pytest.raises(StorageError, match="s3://no-such-bucket-3e7d1/x.warc.gz: the bucket does not exist"):
        expand_inputs(["s3://no-such-bucket-3e7d1/x.warc.gz"])

    documents = f"{bucket}/stage-input/"
    s3_env.filesystem().put(
        f"{tmp_path / 'from-store' / 'documents'}/", documents.removeprefix("s3://"), recursive=True
    )
    run_stage("c4", [documents], f"{bucket}/c4", config, progress=False)  # store to store
    run_stage("c4", [tmp_path / "from-store" / "documents"], tmp_path / "c4-from-disk", config, progress=False)
    on_store = pq.read_table(f"{bucket.removeprefix('s3://')}/c4/documents", filesystem=s3_env.filesystem())
    assert on_store.num_rows > 0
    assert on_store.equals(pq.read_table(tmp_path / "c4-from-disk" / "documents"))


@pytest.mark.parametrize("keep_warcs", [True, False], ids=["downloaded", "streamed"])
def test_warc_pass_reads_the_crawl_from_the_store(
    anonymous: None, public_bucket: str, mirror_url: str, tmp_path: Path, keep_warcs: bool
) -> None:
    from pipeline.app.run import run_pipeline

    overrides = {**WARC_PASS_ONLY, "source.limit_warcs": 2, "source.retries": 1, "engine.workers": 2,
                 "source.keep_warcs": keep_warcs, "source.download_dir": str(tmp_path / "cache")}  # fmt: skip
    from_store = run_pipeline(sample_config(f"s3://{public_bucket}/", tmp_path, "s3", overrides), progress=False)
    from_http = run_pipeline(sample_config(mirror_url, tmp_path, "http", overrides), progress=False)
    assert not from_store.failed and len(from_store.result.done) == 2
    store_docs = pq.read_table(from_store.documents_dir).sort_by("id")
    assert store_docs.num_rows > 0
    assert store_docs.equals(pq.read_table(from_http.documents_dir).sort_by("id"))
    cached = [p for p in (tmp_path / "cache").rglob("*.warc.gz")]
    assert len(cached) == (2 if keep_warcs else 0)  # streamed: read by ranges, never written to disk


def test_store_downloads_resume_verify_and_salvage_like_http(
    s3_env: SeaweedServer,
    bucket: str,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs = s3_env.filesystem()
    rel = sample_crawl.warc_paths[0]
    data = (sample_crawl.root / rel).read_bytes()
    fs.pipe_file(f"{bucket.removeprefix('s3://')}/{rel}", data)

    cache = tmp_path / "resume"
    partial = cache / (rel + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[: len(data) // 3])  # an earlier run stopped here
    assert fetch_warc(bucket, rel, cache, **FAST).read_bytes() == data
    assert not partial.exists()

    monkeypatch.setenv("REFINERY_SCRATCH", str(tmp_path / "scratch"))
    in_scratch = fetch_warc(bucket, rel, location(f"{bucket}/cache"), **FAST)  # the cache must be local
    assert in_scratch == tmp_path / "scratch" / "warc-cache" / rel and in_scratch.read_bytes() == data

    cut = f"{rel.rsplit('/', 1)[0]}/cut.warc.gz"
    fs.pipe_file(f"{bucket.removeprefix('s3://')}/{cut}", data[: len(data) * 2 // 3])  # ends inside a member
    caplog.set_level(logging.WARNING, logger="pipeline.sources.download")
    with pytest.raises(SourceTruncatedError, match=f"from {bucket}/{cut}"):
        fetch_warc(bucket, cut, tmp_path / "strict", **FAST)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], "a cut at the source is not refetched"
    assert not [p for p in (tmp_path / "strict").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    salvaged = fetch_warc(bucket, cut, tmp_path / "salvage", salvage_truncated=True, **FAST)
    assert salvaged.read_bytes() == data[: len(data) * 2 // 3]
    sidecar = json.loads(salvaged.with_name(salvaged.name + ".complete").read_text())
    assert sidecar["truncated_at_source"] is True and sidecar["url"] == f"{bucket}/{cut}"

    page = f"{rel.rsplit('/', 1)[0]}/page.warc.gz"
    fs.pipe_file(f"{bucket.removeprefix('s3://')}/{page}", b"<html>Access denied</html>")
    with pytest.raises(NotGzipError, match=f"{bucket}/{page} did not return a gzip file"):
        fetch_warc(bucket, page, tmp_path / "page", **FAST)


def test_a_store_read_below_the_minimum_speed_is_cut_and_retried(
    s3_env: SeaweedServer,
    public_bucket: str,
    sample_crawl,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    rel = sample_crawl.warc_paths[0]
    impossible = {"min_speed_bps": 1e12, "speed_window_s": 0.001, "deadline_s": None}
    with pytest.raises(DownloadError, match="after 2 failed attempts: too slow") as err:
        fetch_warc(f"s3://{public_bucket}/", rel, tmp_path, **FAST, **impossible)
    assert err.value.limit == "too_slow"
    assert not (tmp_path / rel).exists()
    with pytest.raises(DownloadError, match="deadline: .* not downloaded within") as err:
        fetch_warc(
            f"s3://{public_bucket}/", rel, tmp_path, **{**FAST, "retries": 50}, **{**impossible, "deadline_s": 0.5}
        )
    assert err.value.limit == "deadline"


def test_source_urls_are_checked_when_the_configuration_loads() -> None:
    assert collinfo_url_for("s3://commoncrawl/") == COLLINFO_URL, "Common Crawl's bucket: its announced dumps"
    assert collinfo_url_for("s3://my-mirror/cc/") == "s3://my-mirror/cc/collinfo.json"
    assert load_config(overrides={"source.cc_base_url": "s3://commoncrawl"}).source.cc_base_url == "s3://commoncrawl/"
    with pytest.raises(ConfigError, match="source.cc_base_url.*no storage backend for scheme 'gopher'"):
        load_config(overrides={"source.cc_base_url": "gopher://mirror.example/"})
