"""One typed configuration for a run, shared by the CLI and the Prefect flows, loadable from YAML.

Each section's model lives with the code it configures; this module composes them into ``RunConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from filters.config import DecontaminateConfig, PiiConfig, QualityClassifierConfig, QualityConfig, UrlFilterConfig
from pipeline.app.recipes import RecipeError, RecipeName, changed_from, merge, missing_model, recipe_data
from pipeline.core.settings import Settings
from pipeline.core.storage import Location, StorageError, configure_storage, describe_storage_error, location
from pipeline.dedup.config import DedupConfig
from pipeline.demo import SAMPLE_DUMP
from pipeline.engines.config import EngineConfig
from pipeline.sources.config import COMMON_CRAWL_BASE_URL, SourceConfig
from pipeline.stages.config import ExtractionConfig, LangIdConfig
from tokenization.encoders import TokenizerConfig

__all__ = [
    "COMMON_CRAWL_BASE_URL",
    "SAMPLE_DUMP",
    "ConfigError",
    "EngineConfig",
    "ExtractionConfig",
    "LangIdConfig",
    "RunConfig",
    "SourceConfig",
    "UrlFilterConfig",
    "load_config",
]


class RunConfig(Settings):
    """A whole run: source, stages and engine. The CLI flags and the Prefect form both fill this."""

    name: str | None = Field(None, description="Run name; output goes to OUTPUT_DIR/NAME (default: the dump).")
    recipe: RecipeName | None = Field(
        None,
        description="The recipe this configuration was built from (fineweb, fineweb-edu-like, dclm-like), recorded "
        "in the run's config.yaml; set by --recipe or the flow's recipe parameter. null: none named (the defaults, "
        "which are the fineweb recipe).",
    )
    output_dir: str = Field(
        "out", description="Root folder for runs: a local path or a store URL (s3://bucket/prefix, gs://...)."
    )
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        exclude=True,  # may hold credentials: never written back (config.yaml, report, Prefect parameters)
        repr=False,
        description="Per-protocol fsspec options, e.g. {s3: {endpoint_url: ..., key: ..., secret: ...}}; "
        "AWS_* environment variables and ~/.aws are read anyway. Never recorded in the run's outputs.",
    )
    keep_rejected: bool = Field(False, description="Also write dropped documents to rejected/ for inspection.")
    source: SourceConfig = Field(default_factory=SourceConfig)
    url_filter: UrlFilterConfig = Field(default_factory=UrlFilterConfig)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    quality_classifier: QualityClassifierConfig = Field(default_factory=QualityClassifierConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    tokenize: bool = Field(True, description="Tokenize the final documents into llm.c shards (RUN/tokens).")
    validate_shards: bool = Field(
        False, description="Train a small GPT on the shards (needs torch, the train extra); result in RUN/validation."
    )
    validation_preset: str = Field("auto", description="Validation model: tiny, small, gpt2-124m or auto.")
    report: bool = Field(True, description="Write the dataset report (RUN/report/index.html) at the end.")
    max_failed_parts: int = Field(
        0,
        ge=0,
        description="WARC files that may fail (404, not gzip, ...) while dedup, tokens and the report still run "
        "on the others; failed files are listed in the report and the run exits 3 (completed with failures). "
        "0: a failed file stops the run after the WARC pass.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("output_dir", mode="before")
    @classmethod
    def _output_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @property
    def run_dir(self) -> Location:
        return location(self.output_dir) / (self.name or self.source.dump)


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says what and where."""


def format_validation_error(err: ValidationError) -> str:
    """``invalid configuration: <field>: <what>``; one line per problem under the first when there are several."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")  # our validators' own messages
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in lines)


def load_config(
    path: Path | str | None = None,
    overrides: dict | None = None,
    recipe: str | None = None,
    *,
    require_model: bool = True,
) -> RunConfig:
    """Load a RunConfig: the recipe (``recipe``, else the file's ``recipe:``), then the YAML file (optional; a local
    path or a store URL), then the dotted ``overrides``; raise ConfigError if invalid.

    ``require_model=False`` lets a recipe that needs a classifier model load without one (to print it).
    """
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(location(path).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except StorageError as e:
            raise ConfigError(f"config file {e}") from e
        except OSError as e:
            raise ConfigError(f"config file {describe_storage_error(e, path)}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    named = data.get("recipe")
    if recipe is not None and named is not None and named != recipe:
        raise ConfigError(f"config file {path} is for recipe {named!r}, --recipe says {recipe!r}: drop one")
    recipe = recipe or named
    if recipe is not None:
        try:
            data = {**merge(recipe_data(recipe), data), "recipe": recipe}
        except RecipeError as e:
            raise ConfigError(str(e)) from None
    for key, value in (overrides or {}).items():
        _set_nested(data, key.split("."), value)
    problem = missing_model(recipe, data) if recipe is not None else None
    if problem is not None and require_model:
        raise ConfigError(problem)
    if problem is not None:  # validate without the classifier, then show it enabled, its model still to be set
        data = merge(data, {"quality_classifier": {"enabled": False}})
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    if problem is not None:
        config = config.model_copy(
            update={"quality_classifier": config.quality_classifier.model_copy(update={"enabled": True})}
        )
    configure_storage(config.storage_options)
    return config


def apply_recipe(config: RunConfig, recipe: str) -> RunConfig:
    """``config`` (complete, as the Prefect form sends it) on top of recipe ``recipe``: the fields the config
    changed from the defaults keep their values, the others take the recipe's. Raises ConfigError."""
    changed = changed_from(config.model_dump(mode="json"), RunConfig().model_dump(mode="json"))
    changed.pop("recipe", None)
    try:
        data = {**merge(recipe_data(recipe), changed), "recipe": recipe}
    except RecipeError as e:
        raise ConfigError(str(e)) from None
    if (problem := missing_model(recipe, data)) is not None:
        raise ConfigError(problem)
    try:
        out = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    source = out.source.model_copy(update={"storage_options": config.source.storage_options})  # not dumped
    return out.model_copy(update={"storage_options": config.storage_options, "source": source})


def _set_nested(data: dict, keys: list[str], value: object) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
