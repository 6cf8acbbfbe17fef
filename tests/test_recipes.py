"""Recipes: each loads and validates; recipe, then config file, then flags; unknown names and a missing classifier
model are one clear line (exit 2); the flow applies a recipe under the form's changes; a fineweb-edu-like run
with a small classifier trained here writes quality_score and names the recipe in the report."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from filters.classifier_train import TrainSettings, train_classifier
from filters.config import DCLM_THRESHOLD
from pipeline.app.cli import app
from pipeline.app.config import SAMPLE_DUMP, ConfigError, RunConfig, apply_recipe, load_config
from pipeline.app.recipes import RECIPES, changed_from, recipe_data
from pipeline.report import html as report_html
from pipeline.report.build import build_report

runner = CliRunner()


@pytest.fixture(scope="module")
def model(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fastText classifier: AEB article bodies (hq) vs the same pages' link texts (cc)."""
    from lxml import html as lxml_html

    aeb = realdata / "extraction_aeb"
    truth = json.loads((aeb / "ground-truth.json").read_text())
    positives = [v["articleBody"] for _, v in sorted(truth.items())][:60]
    negatives = []
    for key in sorted(truth)[:60]:
        doc = lxml_html.document_fromstring(gzip.decompress((aeb / "html" / f"{key}.html.gz").read_bytes()))
        links = (" ".join(a.text_content().split()) for a in doc.xpath("//a[not(ancestor::p)]"))
        negatives.append("\n".join(dict.fromkeys(t for t in links if t)))
    out = tmp_path_factory.mktemp("recipe-model") / "model.bin"
    return train_classifier(positives, negatives, out, TrainSettings(bucket=100_000, holdout=0.0)).model_path


def test_each_recipe_loads_and_validates(model: Path) -> None:
    shipped = sorted(p.name[: -len(".yaml")] for p in resources.files("pipeline.app.recipes").iterdir()
                     if p.name.endswith(".yaml"))  # fmt: skip
    assert shipped == sorted(RECIPES)
    defaults = RunConfig().model_dump(mode="json")
    for name in RECIPES:
        data = recipe_data(name)
        assert not changed_from(data, defaults).keys() - defaults.keys(), f"{name}: fields RunConfig lacks"
        config = load_config(recipe=name, overrides={"quality_classifier.model": str(model)})
        assert config.recipe == name and config.pii.enabled
    fineweb = load_config(recipe="fineweb").model_dump(mode="json")
    assert {**fineweb, "recipe": None} == defaults  # the default chain
    edu = load_config(recipe="fineweb-edu-like", overrides={"quality_classifier.model": str(model)})
    assert edu.quality_classifier.enabled and edu.extraction.backend == "trafilatura"
    dclm = load_config(recipe="dclm-like", overrides={"quality_classifier.model": str(model)})
    assert dclm.extraction.backend == "resiliparse"
    assert dclm.quality_classifier.threshold == DCLM_THRESHOLD == 0.018112
    assert dclm.quality_classifier.label == "__label__hq" and dclm.quality_classifier.enabled


def test_recipe_then_config_file_then_flags(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"quality_classifier:\n  model: {model}\n  threshold: 0.3\nextraction:\n  fast: true\nname: mine\n")
    from_file = load_config(path, recipe="dclm-like")
    assert from_file.extraction.backend == "resiliparse" and from_file.extraction.fast  # recipe + file
    assert from_file.quality_classifier.threshold == 0.3 and from_file.name == "mine"  # the file beats the recipe
    flags = load_config(path, {"quality_classifier.threshold": 0.2, "extraction.backend": "trafilatura"}, "dclm-like")
    assert flags.quality_classifier.threshold == 0.2 and flags.extraction.backend == "trafilatura"  # flags beat both
    assert flags.recipe == "dclm-like"
    named = tmp_path / "named.yaml"
    named.write_text(f"recipe: dclm-like\nquality_classifier:\n  model: {model}\n")
    assert load_config(named).extraction.backend == "resiliparse"  # a file may name its recipe
    with pytest.raises(ConfigError, match="is for recipe 'dclm-like', --recipe says 'fineweb'"):
        load_config(named, recipe="fineweb")
    result = runner.invoke(app, ["config", "--recipe", "dclm-like", "-c", str(path), "--set", "engine.workers=3"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["recipe"] == "dclm-like" and printed["engine"]["workers"] == 3
    assert printed["quality_classifier"]["threshold"] == 0.3 and printed["extraction"]["backend"] == "resiliparse"


def test_unknown_recipe_is_one_clear_line() -> None:
    for args in (["run", "--recipe", "c4"], ["config", "--recipe", "c4"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == "unknown recipe 'c4'; known recipes: fineweb, fineweb-edu-like, dclm-like"


def test_dclm_like_without_a_model_says_which_option_to_set(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--recipe", "dclm-like", "-o", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--set quality_classifier.model=PATH" in lines[0], result.output
    assert "recipe dclm-like needs a quality classifier model" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing was started
    printed = runner.invoke(app, ["config", "--recipe", "dclm-like"])  # printing it needs no model
    assert printed.exit_code == 0, printed.output
    data = yaml.safe_load(printed.stdout)
    assert data["quality_classifier"] == {**data["quality_classifier"], "enabled": True, "model": None}
    assert "runs only with quality_classifier.model set" in printed.stderr


def test_flow_applies_the_recipe_under_the_form_changes(model: Path) -> None:
    """The form sends a complete config: fields changed from the defaults keep their values, the rest take the
    recipe's; the flow's recipe parameter offers exactly the shipped recipes."""
    form = RunConfig.model_validate(
        {"name": "edu", "quality_classifier": {"model": str(model), "threshold": 0.25}, "storage_options": {"s3": {}}}
    )
    applied = apply_recipe(form, "fineweb-edu-like")
    assert applied.recipe == "fineweb-edu-like" and applied.name == "edu"
    assert applied.quality_classifier.enabled and applied.quality_classifier.threshold == 0.25
    assert applied.storage_options == {"s3": {}}
    with pytest.raises(ConfigError, match="set quality_classifier.model"):
        apply_recipe(RunConfig(), "dclm-like")
    pytest.importorskip("prefect")
    from prefect.utilities.callables import parameter_schema

    from flows.refinery_flow import _checked_parameters, refinery

    schema = parameter_schema(refinery.fn).model_dump()
    recipe = schema["properties"]["recipe"]
    assert [c.get("enum") for c in recipe["anyOf"] if "enum" in c] == [list(RECIPES)]
    config, _, _ = _checked_parameters(form.model_dump(mode="json"), False, False, "dclm-like")
    assert config.extraction.backend == "resiliparse" and config.quality_classifier.threshold == 0.25


def test_fineweb_edu_like_run_writes_quality_score(
    model: Path, tmp_path: Path, mirror_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["run", "--recipe", "fineweb-edu-like", "--cc-base-url", mirror_url, "--dump", SAMPLE_DUMP]
    args += ["--limit-warcs", "1", "-o", str(tmp_path), "--name", "edu", "--no-progress"]
    args += ["--set", f"quality_classifier.model={model}", "--set", "quality_classifier.threshold=0.05"]
    args += ["--set", "tokenize=false", "--set", "report=false", "--set", "dedup.minhash.enabled=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "edu"
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["recipe"] == "fineweb-edu-like"
    assert recorded["quality_classifier"]["enabled"] and recorded["quality_classifier"]["threshold"] == 0.05
    scores = pq.read_table(run_dir / "documents").column("quality_score").to_pylist()
    assert scores and all(0.05 <= s <= 1.0 for s in scores)
    assert "quality_classifier" in result.output  # the funnel names the stage
    report = build_report(run_dir)
    assert (report["run"]["recipe"], report["run"]["extractor"]) == ("fineweb-edu-like", "trafilatura")
    monkeypatch.setattr(report_html, "figures", lambda report: defaultdict(lambda: None))  # no plots: faster
    html = " ".join(report_html.render_html(report).split())
    assert "<th>recipe</th><td>fineweb-edu-like, extraction: trafilatura</td>" in html


def test_help_documents_the_options() -> None:
    for command, options in (("run", ("--recipe", "--extractor", "--set")), ("config", ("--recipe", "--set"))):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert all(o in result.output for o in options), (command, result.output)
        assert "fineweb-edu-like" in " ".join(result.output.split())
    stage = runner.invoke(app, ["stage", "--help"])
    assert "--extractor" in stage.output and "resiliparse" in stage.output
