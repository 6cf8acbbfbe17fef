"""The decontaminate stage: real passages planted into real documents, normalisation, several named benchmarks,
JSONL/Parquet/text inputs, a 20 MB benchmark, clear errors, and the stage in the WARC pass of the sample crawl."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.config import DecontaminateConfig
from filters.decontaminate import BenchmarkError, DecontaminateStage, build_index, normalise
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats
from tests.samples import realdata_config


@pytest.fixture(scope="module")
def articles(realdata: Path) -> list[str]:
    """Human-annotated article bodies (real documents to plant passages into)."""
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    return [v["articleBody"] for v in truth.values() if len(v["articleBody"].split()) > 100]


@pytest.fixture(scope="module")
def sentences(realdata: Path) -> list[str]:
    """Real English sentences of at least 20 words (the benchmark passages)."""
    lines = (realdata / "langid_lingua" / "sentences" / "en.txt").read_text(encoding="utf-8").splitlines()
    return [s for s in lines if len(s.split()) >= 20]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def config(*benchmarks: tuple[str, Path, str], **settings: object) -> DecontaminateConfig:
    return DecontaminateConfig.model_validate(
        {"benchmarks": [{"name": n, "path": str(p), "field": f} for n, p, f in benchmarks], **settings}
    )


def plant(document: str, passage: str) -> str:
    """``passage`` in the middle of ``document``, between two of its paragraphs or words."""
    words = document.split(" ")
    middle = len(words) // 2
    return " ".join([*words[:middle], passage, *words[middle:]])


def normalised_words(text: str) -> list[str]:
    """The words the stage sees in ``text`` (``O'Brien`` is two: ``o brien``)."""
    return normalise(pa.array([text])).to_pylist()[0].split()


def reasons(stage: DecontaminateStage, texts: list[str | None]) -> list[str | None]:
    return stage(pa.table({"text": pa.array(texts, pa.string())})).column("drop_reason").to_pylist()


def test_planted_passages_are_dropped_near_misses_kept(tmp_path: Path, articles: list[str], sentences: list[str]):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": s} for s in sentences[:40]])
    stage = DecontaminateStage(config(("lingua_en", bench, "question")))
    docs = articles[:60]
    planted = [plant(docs[i], sentences[i]) for i in range(20)]
    prefix = [plant(docs[20 + i], " ".join(normalised_words(sentences[i])[:12])) for i in range(20)]  # 12 < 13
    gapped = []
    for i in range(20):  # every 13-word window broken: a word changed every 12 words
        words = normalised_words(sentences[i])
        gapped.append(plant(docs[40 + i], " ".join("zzz" if j % 12 == 6 else w for j, w in enumerate(words))))
    out = reasons(stage, planted + prefix + gapped + articles + [None, ""])
    assert out[:20] == ["lingua_en"] * 20
    assert out[20:] == [None] * (len(out) - 20), "no near-miss and no untouched real document is dropped"


def test_normalisation_case_punctuation_whitespace_diacritics_numbers(tmp_path: Path, articles: list[str]):
    passage = "The café opened in 1998, and its owner said: “We serve 3.5 million cups a year — at least!”"
    bench = write_jsonl(tmp_path / "b.jsonl", [{"text": passage}])
    stage = DecontaminateStage(config(("cafe", bench, "text")))
    variants = [
        passage.upper(),
        passage.replace(",", "").replace(":", " ;").replace("“", '"').replace("”", '"'),
        "\n\n".join(passage.split(" ")),  # one word a line
        passage.replace("café", "cafe"),
        passage.replace("1998", "2004").replace("3.5", "12,25"),  # numbers are normalised
        "  \t" + passage.replace(" ", "   ") + "  ",
    ]
    assert reasons(stage, [plant(articles[0], v) for v in variants]) == ["cafe"] * len(variants)
    strict = DecontaminateStage(config(("cafe", bench, "text"), normalise_numbers=False))
    assert reasons(strict, [passage, variants[4]]) == ["cafe", None]
    assert reasons(strict, [passage.replace("owner", "owners")]) == [None]  # a changed word breaks every 13-gram


def test_several_benchmarks_each_named(tmp_path: Path, articles: list[str], sentences: list[str]):
    a = write_jsonl(tmp_path / "a.jsonl", [{"q": s} for s in sentences[:10]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"q": s} for s in sentences[10:20]] + [{"q": sentences[0]}])
    stage = DecontaminateStage(config(("alpha", a, "q"), ("beta", b, "q")))
    texts = [
        plant(articles[0], sentences[3]),
        plant(articles[1], sentences[13]),
        sentences[14] + " " + plant(articles[2], sentences[4]),  # both: the first configured benchmark names it
        plant(articles[3], sentences[0]),  # in both files
        articles[4],
    ]
    assert reasons(stage, texts) == ["alpha", "beta", "alpha", "alpha", None]
    swapped = DecontaminateStage(config(("beta", b, "q"), ("alpha", a, "q")))
    assert reasons(swapped, texts) == ["alpha", "beta", "beta", "beta", None]


def test_drops_are_counted_per_benchmark(tmp_path: Path, articles: list[str], sentences: list[str]):
    a = write_jsonl(tmp_path / "a.jsonl", [{"q": s} for s in sentences[:10]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"q": s} for s in sentences[10:20]])
    stage = DecontaminateStage(config(("alpha", a, "q"), ("beta", b, "q")))
    texts = [plant(articles[i], sentences[i]) for i in range(3)] + [plant(articles[5], sentences[15])] + articles[6:9]
    stats = PartStats(part="p")
    kept, rejected = run_chain([stage], pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), stats)
    assert kept.num_rows == 3 and "drop_reason" not in kept.column_names
    assert dict(stats.stage("decontaminate").drops) == {"decontaminate:alpha": 3, "decontaminate:beta": 1}
    assert rejected[0].column("drop_stage").to_pylist() == ["decontaminate"] * 4


def test_jsonl_parquet_and_text_inputs(tmp_path: Path, articles: list[str], sentences: list[str]):
    rows = [{"id": i, "prompt": s, "choices": [sentences[100 + i], "yes"]} for i, s in enumerate(sentences[:5])]
    jsonl_gz = tmp_path / "q.jsonl.gz"
    jsonl_gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    parquet = tmp_path / "q.parquet"
    pq.write_table(pa.Table.from_pylist([{"body": s} for s in sentences[5:10]]), parquet)
    text = tmp_path / "q.txt"
    text.write_text("\n".join(sentences[10:15]) + "\n", encoding="utf-8")
    odd_name = tmp_path / "q.data"
    odd_name.write_text("\n".join(sentences[15:20]), encoding="utf-8")
    cfg = DecontaminateConfig.model_validate(
        {
            "benchmarks": [
                {"name": "jsonl", "path": str(jsonl_gz), "field": "prompt"},
                {"name": "choices", "path": str(jsonl_gz), "field": "choices"},  # a list of strings
                {"name": "parquet", "path": str(parquet), "field": "body"},
                {"name": "text", "path": str(text)},
                {"name": "forced", "path": str(odd_name), "format": "text"},
            ]
        }
    )
    stage = DecontaminateStage(cfg)
    picks = [sentences[2], sentences[101], sentences[7], sentences[12], sentences[17], sentences[30]]
    assert reasons(stage, [plant(articles[i], p) for i, p in enumerate(picks)]) == [
        "jsonl", "choices", "parquet", "text", "forced", None,
    ]  # fmt: skip


def test_errors_name_the_benchmark_and_what_is_wrong(tmp_path: Path):
    good = write_jsonl(tmp_path / "b.jsonl", [{"question": "a b c", "n": 1}])
    with pytest.raises(BenchmarkError, match=r"benchmark 'gone': file not found: .*missing\.jsonl"):
        build_index(config(("gone", tmp_path / "missing.jsonl", "text")))
    with pytest.raises(BenchmarkError, match=r"benchmark 'nofield': no field 'text' in .*\['question', 'n'\]"):
        build_index(config(("nofield", good, "text")))
    with pytest.raises(BenchmarkError, match=r"field 'n' .* holds int64, not text"):
        build_index(config(("number", good, "n")))
    pq.write_table(pa.table({"question": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(BenchmarkError, match=r"benchmark 'pq': no field 'answer' in .*\['question'\]"):
        build_index(config(("pq", tmp_path / "b.parquet", "answer")))
    with pytest.raises(BenchmarkError, match=r"benchmark 'missingpq': file not found"):
        build_index(config(("missingpq", tmp_path / "none.parquet", "text")))
    (tmp_path / "b.csv").write_text("a,b\n")
    with pytest.raises(BenchmarkError, match=r"cannot tell the format .*set format"):
        build_index(config(("csv", tmp_path / "b.csv", "a")))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(BenchmarkError, match=r"benchmark 'bad': .* is not JSON lines"):
        build_index(config(("bad", tmp_path / "bad.jsonl", "text")))
    with pytest.raises(ValueError, match="benchmark names must be unique"):
        config(("same", good, "question"), ("same", good, "question"))
    with pytest.raises(ValueError, match="String should match pattern"):
        config(("has space", good, "question"))


def big_benchmark(realdata: Path, size: int) -> list[str]:
    """JSON lines of about ``size`` bytes: entries of 20-60 words drawn from the words of real sentences in 75
    languages, so nearly every n-gram is distinct (the worst case for the index)."""
    vocab: set[str] = set()
    for path in sorted((realdata / "langid_lingua" / "sentences").glob("*.txt")):
        vocab.update(path.read_text(encoding="utf-8").split())
    words, rng = sorted(vocab), random.Random(0)
    rows, total = [], 0
    while total < size:
        row = json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(20, 60)))}, ensure_ascii=False) + "\n"
        rows.append(row)
        total += len(row.encode())
    return rows


def test_a_20mb_benchmark_builds_in_seconds(tmp_path: Path, realdata: Path, articles: list[str]):
    rows = big_benchmark(realdata, 20_000_000)
    path = tmp_path / "big.jsonl"
    path.write_text("".join(rows), encoding="utf-8")
    start = time.perf_counter()
    index = build_index(config(("big", path, "text")))
    seconds = time.perf_counter() - start
    assert seconds < 30, f"a 20 MB benchmark took {seconds:.1f} s to index"
    assert len(index) > 1_000_000  # nearly every n-gram of the file is distinct
    passage = json.loads(rows[len(rows) // 2])["text"]
    stage = DecontaminateStage(config(("big", path, "text")), index)
    assert reasons(stage, [plant(articles[0], passage), articles[1]]) == ["big", None]


def test_the_stage_pickles_with_its_index(tmp_path: Path, articles: list[str], sentences: list[str]):
    """Engines ship the stage (inside the WARC pass's processor) to workers by pickling or forking."""
    bench = write_jsonl(tmp_path / "b.jsonl", [{"text": s} for s in sentences[:5]])
    stage = DecontaminateStage(config(("b", bench, "text")))
    bench.unlink()  # a worker never reads the file
    copy = pickle.loads(pickle.dumps(stage))
    texts = [plant(articles[0], sentences[1]), articles[1]]
    assert reasons(copy, texts) == reasons(stage, texts) == ["b", None]


def word_ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    """Every n-gram of the words the stage sees, in plain Python (the reference the stage is checked against)."""
    words = normalised_words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def sample_passages(sample_crawl, warc_index: int) -> dict[str, str]:  # noqa: ANN001 - SampleCrawl
    """``{url: 40 words from the middle of its human-annotated text}`` for English pages of one sample WARC."""
    from importlib.resources import files

    manifest = json.loads(sample_crawl.manifest_path.read_text())
    truth = json.loads(gzip.decompress((files("pipeline.demo") / "sample_data" / "ground_truth.json.gz").read_bytes()))
    passages = {}
    for rec in manifest["responses"]:
        body = (truth.get(rec["url"]) or {}).get("articleBody") if isinstance(truth.get(rec["url"]), dict) else None
        if rec["warc_path"] != manifest["warc_paths"][warc_index] or "language:en" not in rec["kinds"] or not body:
            continue
        words = body.split()
        if len(words) >= 120:
            passages[rec["url"]] = " ".join(words[len(words) // 2 : len(words) // 2 + 40])
    return passages


def test_the_warc_pass_drops_planted_sample_documents(tmp_path: Path, mirror_url: str, sample_crawl) -> None:  # noqa: ANN001
    from pipeline.app.run import run_pipeline
    from pipeline.core.parts import load_stats, read_documents
    from pipeline.core.stats import merge_parts
    from pipeline.report.build import ReportConfig, build_report, summary_markdown
    from tests.samples import WARC_PASS_ONLY, sample_config

    passages = sample_passages(sample_crawl, 0)
    assert len(passages) >= 3
    bench = write_jsonl(tmp_path / "planted.jsonl", [{"passage": p} for p in passages.values()])
    overrides = {
        **WARC_PASS_ONLY,
        "source.limit_warcs": 1,
        "keep_rejected": True,
        "decontaminate.benchmarks": [{"name": "planted", "path": str(bench), "field": "passage"}],
    }
    run_dir = run_pipeline(sample_config(mirror_url, tmp_path, "decont", overrides), progress=False).run_dir
    stats = merge_parts(load_stats(run_dir)).stage("decontaminate")
    assert set(stats.drops) == {"decontaminate:planted"} and stats.drops["decontaminate:planted"] >= 1
    rejected = pq.read_table(run_dir / "rejected").to_pylist()
    ours = [r for r in rejected if r["drop_stage"] == "decontaminate"]
    assert len(ours) == stats.drops["decontaminate:planted"]
    assert {r["drop_reason"] for r in ours} == {"planted"} and {r["url"] for r in ours} & set(passages)
    grams = {g for p in passages.values() for g in word_ngrams(p)}
    for r in ours:  # a planted page, or a copy of one (the sample crawl syndicates some pages)
        assert word_ngrams(r["text"]) & grams, r["url"]
    for text in read_documents(run_dir).column("text").to_pylist():
        assert not word_ngrams(text) & grams
    report = build_report(run_dir, ReportConfig())
    row = next(d for d in report["drops"] if d["key"] == "decontaminate:planted")
    assert row["count"] == len(ours) and row["stage"] == "decontaminate" and row["rule"] == "planted"
    assert {s["url"] for s in row["samples"]} <= {r["url"] for r in ours}
    assert f"| decontaminate:planted | {len(ours):,} |" in summary_markdown(report)  # as the CLI's funnel shows
    assert "decontaminate" in [s["stage"] for s in report["funnel"]["stages"]]


def test_refinery_stage_decontaminate_builds_the_index_once_and_fails_fast(
    tmp_path: Path, articles: list[str], sentences: list[str]
) -> None:
    from pipeline.app.config import load_config
    from pipeline.app.stagerun import run_stage
    from pipeline.core.parts import load_stats

    bench = write_jsonl(tmp_path / "b.jsonl", [{"q": s} for s in sentences[:5]])
    texts = [plant(articles[0], sentences[2]), articles[1], articles[2]]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": texts}), tmp_path / "docs.parquet")
    bad = load_config(overrides={"decontaminate.benchmarks": [{"name": "b", "path": str(bench), "field": "x"}]})
    with pytest.raises(BenchmarkError, match="no field 'x'"):
        run_stage("decontaminate", [tmp_path / "docs.parquet"], tmp_path / "bad", bad, progress=False)
    assert not (tmp_path / "bad" / "markers").exists()
    with pytest.raises(ValueError, match="needs benchmarks"):
        run_stage("decontaminate", [tmp_path / "docs.parquet"], tmp_path / "none", load_config(), progress=False)
    config = load_config(overrides={"decontaminate.benchmarks": [{"name": "b", "path": str(bench), "field": "q"}]})
    run_stage("decontaminate", [tmp_path / "docs.parquet"], tmp_path / "out", config, progress=False)
    (stats,) = load_stats(tmp_path / "out")
    assert dict(stats.stage("decontaminate").drops) == {"decontaminate:b": 1}


def test_refinery_run_refuses_a_bad_benchmark_with_one_line_and_exit_2(
    tmp_path: Path, mirror_url: str, sentences: list[str]
) -> None:
    from typer.testing import CliRunner

    from pipeline.app.cli import app

    good = write_jsonl(tmp_path / "good.jsonl", [{"q": s} for s in sentences[:3]])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notgzip.jsonl.gz").write_text('{"q": "not compressed"}\n')
    (tmp_path / "short.txt").write_text("two words\nthree short words\n")
    cases = {
        "missing": ((tmp_path / "missing.jsonl", "q"), "file not found"),
        "empty": ((tmp_path / "empty.jsonl", "q"), "is empty"),
        "field": ((good, "question"), "no field 'question'"),
        "unreadable": ((tmp_path / "notgzip.jsonl.gz", "q"), "cannot read"),
        "short": ((tmp_path / "short.txt", "text"), "none of the 2 lines"),
    }
    for name, ((path, field), message) in cases.items():
        benchmarks = json.dumps([{"name": name, "path": str(path), "field": field}])
        args = ["run", "--cc-base-url", mirror_url, "--limit-warcs", "1", "-o", str(tmp_path / "out"), "--no-progress"]
        result = CliRunner().invoke(app, [*args, "--set", f"decontaminate.benchmarks={benchmarks}"])
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: benchmark '{name}': "), (name, result.output)
        assert message in lines[0], (name, result.output)


def test_the_spark_engine_drops_what_the_local_engine_drops(tmp_path: Path, realdata: Path, spark) -> None:  # noqa: ANN001
    """The index built on the driver reaches Spark's executors with the WARC pass: same drops, same documents."""
    from pipeline.app.warc import run_warc_pass
    from pipeline.core.parts import load_stats, read_documents
    from pipeline.core.stats import merge_parts
    from pipeline.engines.base import WorkUnit
    from pipeline.engines.local import LocalEngine
    from pipeline.engines.spark import SparkEngine

    warcs = ["wget-sample-0000.warc.gz"]
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(name,)) for i, name in enumerate(warcs)]

    def run_config(name: str, benchmarks: list[dict]):  # noqa: ANN202 - RunConfig
        overrides = {"keep_rejected": False, "decontaminate.benchmarks": benchmarks}
        return realdata_config(realdata, tmp_path, name, overrides)

    plain = run_config("plain", [])
    run_warc_pass(plain, units, LocalEngine(workers=1, progress=False))
    texts = [t for t in read_documents(plain.run_dir).column("text").to_pylist() if len(t.split()) >= 60]
    passages = [" ".join(t.split()[20:50]) for t in texts[::2]]  # a passage of every other long kept document
    assert len(passages) >= 2
    bench = write_jsonl(tmp_path / "kept.jsonl", [{"p": p} for p in passages])
    benchmarks = [{"name": "kept", "path": str(bench), "field": "p"}]
    local, on_spark = run_config("local", benchmarks), run_config("spark", benchmarks)
    run_warc_pass(local, units, LocalEngine(workers=1, progress=False))
    run_warc_pass(on_spark, units, SparkEngine(spark, progress=False))
    drops = {c.name: merge_parts(load_stats(c.run_dir)).stage("decontaminate").drops for c in (local, on_spark)}
    assert drops["spark"] == drops["local"] and drops["local"]["decontaminate:kept"] >= len(passages), drops
    ids = {c.name: sorted(read_documents(c.run_dir).column("id").to_pylist()) for c in (local, on_spark)}
    assert ids["spark"] == ids["local"]
