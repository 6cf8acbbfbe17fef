"""The dataset report, a comparison and the flow's progress and artifacts for a run folder on an object store
(a real S3 server, SeaweedFS): the same figures as from a local copy, the files on the store, and no credential
in anything written."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
import typer
import yaml
from typer.testing import CliRunner

from pipeline.app.report_cli import report_command
from pipeline.core.parts import part_name
from pipeline.core.storage import location
from pipeline.report.build import build_report, write_report
from pipeline.report.compare import write_comparison
from tests.objectstore import ACCESS_KEY, SECRET_KEY

pytest.importorskip("prefect", reason="the flow's artifacts need prefect")

from flows.artifacts import RunOutputs, outputs_markdown, report_location, report_markdown  # noqa: E402
from flows.outputs import OutputsSite  # noqa: E402
from flows.progress import ProgressReader, read_progress  # noqa: E402

SAME_FIGURES = ("funnel", "drops", "source", "documents", "kept_samples", "dedup", "tokens", "validation", "checks")
"""Sections of report.json that depend only on the run's content, not on where it is."""


@pytest.fixture(scope="module")
def local_run(sample_run, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """A copy of the sample run without its report (each test writes its own)."""
    dest = tmp_path_factory.mktemp("objectstore-report") / "reference"
    shutil.copytree(sample_run.run_dir, dest, ignore=lambda d, names: {"report"} & set(names))
    return dest


@pytest.fixture(scope="module")
def store(object_store) -> Iterator[Any]:  # noqa: ANN001 - SeaweedServer
    """The test store, with this process's AWS_* variables pointing at it for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in object_store.env().items():
            mp.setenv(name, value)
        yield object_store


@pytest.fixture(scope="module")
def store_run(store, local_run: Path) -> str:  # noqa: ANN001
    """The same run uploaded to a bucket: ``s3://BUCKET/runs/reference``."""
    bucket = store.create_bucket("report")
    store.filesystem().put(str(local_run), f"{bucket}/runs/reference", recursive=True)
    url = f"s3://{bucket}/runs/reference"
    assert store.filesystem().exists(f"{bucket}/runs/reference/stats/part-00000.json")
    return url


def _fs(store: Any) -> s3fs.S3FileSystem:
    return store.filesystem()


def _key(url: str) -> str:
    return url.removeprefix("s3://")


def _without_location(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a report, without the paths of the files they came from."""
    out = {k: report[k] for k in SAME_FIGURES}
    for k, section in out.items():
        if isinstance(section, dict) and "path" in section:
            out[k] = {**section, "path": Path(section["path"]).name}
    return out


@pytest.fixture
def s3_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """``(kind, path)`` of each request the s3 filesystem of this process sends (kinds: list, read, head)."""
    requests: list[tuple[str, str]] = []

    def counting(kind: str, method: Callable) -> Callable:
        @functools.wraps(method)  # the same signature: callers look at it
        async def wrapped(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            requests.append((kind, str(path)))
            return await method(self, path, *args, **kwargs)

        return wrapped

    for name, kind in (("_lsdir", "list"), ("_cat_file", "read"), ("_info", "head"), ("_exists", "head")):
        monkeypatch.setattr(s3fs.S3FileSystem, name, counting(kind, getattr(s3fs.S3FileSystem, name)))
    s3fs.S3FileSystem.clear_instance_cache()  # instances bind their sync methods when created
    yield requests
    monkeypatch.undo()
    s3fs.S3FileSystem.clear_instance_cache()


def _kinds(requests: list[tuple[str, str]]) -> Counter:
    return Counter(kind for kind, _ in requests)


# ---------------------------------------------------------------- the report


def test_report_of_a_run_on_the_store_equals_the_local_report(
    store, store_run: str, local_run: Path, tmp_path: Path, s3_requests: list[tuple[str, str]]
) -> None:  # noqa: ANN001
    local = write_report(local_run, out_dir=tmp_path / "local-report")
    s3_requests.clear()
    remote = write_report(store_run)
    requests = list(s3_requests)
    assert str(remote.json_path) == f"{store_run}/report/report.json"
    assert str(remote.html_path) == f"{store_run}/report/index.html"
    fs = _fs(store)
    assert set(fs.ls(f"{_key(store_run)}/report", detail=False)) == {
        f"{_key(store_run)}/report/report.json",
        f"{_key(store_run)}/report/index.html",
    }
    on_store = json.loads(fs.cat_file(f"{_key(store_run)}/report/report.json"))
    assert _without_location(on_store) == _without_location(local.report)
    assert on_store["run"]["run_dir"] == store_run
    assert on_store["run"]["config"] == local.report["run"]["config"]
    assert [p["name"] for p in on_store["run"]["passes"]] == ["main", "dedup", "tokens"]
    assert all(p["path"].startswith(store_run) for p in on_store["run"]["passes"])
    assert on_store["tokens"]["totals"]["num_tokens"] > 0 and on_store["dedup"] is not None
    assert all(c["ok"] for c in on_store["checks"])
    # the page on the store shows the same figures as the local one
    html = fs.cat_file(f"{_key(store_run)}/report/index.html").decode()
    local_html = Path(local.html_path).read_text()
    assert 'id="funnel"' in html and store_run in html

    def same_place(page: str, run: str, generated_at: str) -> str:
        return page.replace(run, "RUN").replace(f"generated {generated_at}", "generated")

    assert same_place(html, store_run, on_store["generated_at"]) == same_place(
        local_html, str(local_run.resolve()), local.report["generated_at"]
    )
    # a few listings per pass folder and one read of each part's stats (concurrent): no request about a part
    # before reading it; metadata only of the few documents files sampled
    parts = sum(p["parts"] for p in on_store["run"]["passes"])
    heads = [path for kind, path in requests if kind == "head"]
    assert all("/documents/" in path for path in heads), heads
    assert len(heads) <= 2 * len(on_store["kept_samples"]), heads
    assert _kinds(requests)["list"] <= 4 * len(on_store["run"]["passes"]) + 12, requests
    reads = [path for kind, path in requests if kind == "read"]
    assert len(reads) == len(set(reads)) and sum("/stats/part-" in path for path in reads) == parts, reads


def test_report_of_a_missing_run_or_bucket_fails_clearly(store, store_run: str) -> None:  # noqa: ANN001
    from pipeline.core.storage import StorageError
    from pipeline.report.build import ReportError

    with pytest.raises(ReportError, match="run folder not found"):
        build_report(f"{store_run}-missing")
    with pytest.raises((ReportError, StorageError), match="run folder not found|bucket does not exist"):
        build_report("s3://no-such-bucket-refinery/run")


def test_report_command_accepts_urls_and_compares_a_local_and_a_store_run(
    store, store_run: str, local_run: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)  # a multi-command app, as the main CLI mounts it
    runner = CliRunner()
    out = f"{store_run}-cli-report"
    result = runner.invoke(app, ["report", store_run, "-o", out, "--compare", str(local_run)])
    assert result.exit_code == 0, result.output
    assert f"report: {out}/index.html" in result.output
    assert "No stage and no rule changed" in result.output
    fs = _fs(store)
    names = {Path(n).name for n in fs.ls(_key(out), detail=False)}
    assert names == {"index.html", "report.json", "compare-reference.html", "compare-reference.json"}
    comparison = json.loads(fs.cat_file(f"{_key(out)}/compare-reference.json"))
    assert comparison["identical"] and comparison["config_changes"] == []
    assert comparison["a"]["run_dir"] == store_run and comparison["b"]["run_dir"] == str(local_run.resolve())
    # and the other way round: a local run against the store, written locally
    files = write_comparison(local_run, store_run, out_dir=tmp_path / "cmp")
    assert files.result["identical"] and Path(files.json_path).name == "compare-reference.json"
    assert Path(files.html_path).is_file()
    result = runner.invoke(app, ["report", f"{store_run}-nothing-here"])
    assert result.exit_code == 2 and "run folder not found" in result.output


def test_no_credential_reaches_the_report_or_the_artifacts(
    store, store_run: str, local_run: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    """A config.yaml holding credentials (storage_options, a URL with a password, a key nobody excluded) and
    a store reached with the test secret: nothing written says the secret."""
    fs = _fs(store)
    run = f"{store_run}-secrets"
    fs.put(str(local_run), _key(run), recursive=True)
    config = yaml.safe_load(fs.cat_file(f"{_key(run)}/config.yaml"))
    config["storage_options"] = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": store.endpoint}}
    config["source"]["cc_base_url"] = f"https://reader:{SECRET_KEY}@mirror.example/"
    config["extra"] = {"aws_secret_access_key": SECRET_KEY, "note": f"made with {SECRET_KEY}"}
    fs.pipe_file(f"{_key(run)}/config.yaml", yaml.safe_dump(config).encode())
    files = write_report(run)
    comparison = write_comparison(run, local_run)
    embedded = files.report["run"]["config"]
    assert "storage_options" not in embedded and embedded["extra"]["aws_secret_access_key"] == "***"
    assert embedded["source"]["cc_base_url"] == "https://***@mirror.example/"
    written = {name: fs.cat_file(name) for name in fs.find(f"{_key(run)}/report")}
    assert set(map(lambda n: Path(n).name, written)) == {
        "index.html",
        "report.json",
        "compare-reference.html",
        "compare-reference.json",
    }
    for name, content in written.items():
        assert SECRET_KEY.encode() not in content, name
        assert ACCESS_KEY.encode() not in content, name
    assert "made with ***" in json.loads(written[f"{_key(run)}/report/report.json"])["run"]["config"]["extra"]["note"]
    assert not any(c["key"].startswith("storage_options") for c in comparison.result["config_changes"])
    # what the flow publishes as artifacts
    outputs = RunOutputs(
        run_dir=location(run),
        documents_dir=location(f"{run}/dedup"),
        documents=[location(f"{run}/dedup/documents/{part_name(i)}.parquet") for i in range(3)],
        tokens=location(f"{run}/tokens"),
        report=files.html_path,
    )
    site = OutputsSite(root=tmp_path.resolve(), url="http://127.0.0.1:4201/")
    from pipeline.core.parts import total_stats

    markdown = outputs_markdown(outputs, total_stats(local_run), site)
    headline = report_markdown("secrets", files.report, report_location(files.html_path, site))
    for text in (markdown, headline):
        assert SECRET_KEY not in text and ACCESS_KEY not in text
        assert f"`{run}/report/index.html` (on the object store" in text
        assert "http://127.0.0.1:4201" not in text and "](s3://" not in text
    assert f"`{run}/dedup/documents`" in markdown and f"`{run}/rejected`" in markdown
    assert " 0.0 MB" not in markdown  # sizes come from the store's listing
    assert site.url_for(files.html_path) is None


# ---------------------------------------------------------------- progress


def test_progress_of_a_pass_on_the_store_lists_folders_instead_of_asking_per_part(
    store, store_run: str, sample_run, s3_requests: list[tuple[str, str]]
) -> None:  # noqa: ANN001
    parts = [part_name(i) for i in range(4)]
    warc = sample_run.pass_stats[0]
    assert read_progress(store_run, [*parts, part_name(4)]).percent == 80.0
    reader = ProgressReader(store_run, parts)
    s3_requests.clear()
    first = reader.read()
    assert (first.done, first.total, first.read, first.kept) == (4, 4, warc.source["documents"], warc.docs_out)
    # two listings, then each part's progress and stats once
    assert _kinds(s3_requests) == Counter({"list": 2, "read": 8}), s3_requests
    s3_requests.clear()
    for _ in range(3):  # nothing changed: each poll is two listings, no read
        assert reader.read() == first
    assert _kinds(s3_requests) == Counter({"list": 6}), s3_requests
    # a part redone: its marker goes away, its progress file changes; only that file is read again
    fs = _fs(store)
    fs.rm_file(f"{_key(store_run)}/markers/{parts[3]}.done")
    fs.pipe_file(f"{_key(store_run)}/progress/{parts[3]}.json", b'{"docs": 1}')
    try:
        s3_requests.clear()
        now = reader.read()
        assert now.done == 3 and now.kept < warc.docs_out and now.read < warc.source["documents"]
        assert _kinds(s3_requests) == Counter({"list": 2, "read": 1}), s3_requests
    finally:
        for folder, name in (("markers", f"{parts[3]}.done"), ("progress", f"{parts[3]}.json")):
            fs.put_file(str(sample_run.run_dir / folder / name), f"{_key(store_run)}/{folder}/{name}")
    assert reader.read() == first


def test_report_command_reaches_the_store_with_the_run_configs_storage_options(
    store, store_run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """No AWS_* variables: the credentials are in the run config's storage_options, and stay out of the report."""
    import fsspec.config

    from pipeline.core import storage

    monkeypatch.setattr(fsspec.config, "conf", copy.deepcopy(fsspec.config.conf))  # what configure_storage sets
    monkeypatch.setattr(storage, "_configured", {})
    for name in store.env():
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setattr(s3fs.S3FileSystem, "_cache", {})  # instances made here do not outlive the test
    config = tmp_path / "run.yaml"
    options = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": store.endpoint}}
    config.write_text(yaml.safe_dump({"storage_options": options}))
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)
    out = f"{store_run}-with-options"
    result = CliRunner().invoke(app, ["report", store_run, "-o", out, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert SECRET_KEY not in result.output
    fs = _fs(store)
    for name in ("index.html", "report.json"):
        content = fs.cat_file(f"{_key(out)}/{name}")
        assert content and SECRET_KEY.encode() not in content and ACCESS_KEY.encode() not in content
    # the same store without them: refused, in one line
    monkeypatch.setattr(storage, "_configured", {})
    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setattr(s3fs.S3FileSystem, "_cache", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.endpoint)
    result = CliRunner().invoke(app, ["report", store_run, "-o", f"{out}-2"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no credentials" in result.output or "access denied" in result.output
    assert SECRET_KEY not in result.output and store_run in result.output
    assert not fs.exists(f"{_key(out)}-2/report.json")
