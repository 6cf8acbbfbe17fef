"""The ``ablate`` flow through Prefect's ephemeral harness (one server for the file: it takes ~15 s to start).

Two real token runs: English web text, and the same shards with their tokens shuffled (same unigram
distribution, no structure), scored on held-out AEB article bodies. The flow must train runs x seeds models,
write what ``refinery ablate`` writes, name the real text the winner in a Markdown artifact, and fail bad
input with one clear line in the run's log, without retrying it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.155')")
pytest.importorskip("torch", reason="the ablation needs the [train] extra (torch)")

from prefect.settings import (  # noqa: E402
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_LOGGING_TO_API_BATCH_INTERVAL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from prefect.utilities.schema_tools import validate  # noqa: E402

from flows.ablate_flow import AblatePreset, ablate  # noqa: E402
from flows.deployments import ABLATE, build_deployments, deployment_parameters  # noqa: E402
from tests import prefect_api  # noqa: E402
from tests.test_validate_shards import real_texts, rewrite_shards, shuffle_tokens, write_shard_dir  # noqa: E402
from validation.validate import PRESETS  # noqa: E402

SEEDS = 2
BUDGET = 40_000
"""40 steps of the tiny preset: the real text's models beat the shuffled ones by ~0.38 nats in each seed."""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ephemeral Prefect server (SQLite in a temporary folder) for every test of the file."""
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings(
            {
                PREFECT_HOME: str(home),
                PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_LOGGING_TO_API_BATCH_INTERVAL: 0.25,  # the log lines the tests wait for arrive sooner
            }
        ),
        prefect_test_harness(server_startup_timeout=90),
    ):
        yield str(PREFECT_API_URL.value()).rstrip("/")


@pytest.fixture(scope="module")
def runs(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run-a/tokens`` (real text, GPT-2), ``run-b/tokens`` (its tokens shuffled) and ``reference.parquet``
    (every other AEB article body, kept out of the runs)."""
    encoders = pytest.importorskip("tokenization.encoders")
    try:
        tokenizer = encoders.load_tokenizer("gpt2")
    except encoders.TokenizerAssetError as e:
        pytest.skip(f"GPT-2 rank file unavailable offline: {e}")
    ground_truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    held_out = [ground_truth[key]["articleBody"] for key in sorted(ground_truth)][::2]
    texts = [t for t in real_texts(realdata) if t not in set(held_out)]
    base = tmp_path_factory.mktemp("ablate")
    docs = tokenizer.encode_arrays(texts)
    real = write_shard_dir(base / "run-a" / "tokens", docs, tokenizer.vocab_size, tokenizer.eot_token)
    rewrite_shards(real, base / "run-b" / "tokens", shuffle_tokens)
    pq.write_table(pa.table({"text": held_out}), base / "reference.parquet")
    return base


def _run(**params: Any):  # noqa: ANN202 - prefect State
    defaults = {"seeds": SEEDS, "tokens": BUDGET, "preset": "tiny", "device": "cpu", "reference_tokens": 20_000}
    return ablate(**{**defaults, **params}, return_state=True)


def _flow_run_id(state) -> str:  # noqa: ANN001
    return str(state.state_details.flow_run_id)


@pytest.fixture(scope="module")
def ablation(api_url: str, runs: Path) -> tuple[Any, str]:
    """The flow run on the two runs, and its id."""
    state = _run(runs=[str(runs / "run-a"), str(runs / "run-b")], reference=str(runs / "reference.parquet"))
    return state, _flow_run_id(state)


def test_flow_trains_every_model_and_names_the_winner(ablation: tuple[Any, str], runs: Path, api_url: str) -> None:
    state, flow_run_id = ablation
    assert state.is_completed(), state.message
    out = runs / "run-a" / "ablations" / "run-a-vs-run-b"
    result = state.result()
    assert result["report"] == str(out / "ablation.json") and result["page"] == str(out / "index.html")
    assert json.loads(json.dumps(result)) == result  # the flow's return value is plain JSON
    report = json.loads((out / "ablation.json").read_text())
    models = sorted((m["run"], m["seed"]) for m in report["models"])
    assert models == [(run, seed) for run in ("run-a", "run-b") for seed in range(SEEDS)]
    assert report["config"]["tokens"] == -(-BUDGET // 1024) * 1024  # rounded up to whole steps of 16 x 64 tokens
    loss = {(m["run"], m["seed"]): m["reference_loss"] for m in report["models"]}
    assert all(loss[("run-a", s)] < loss[("run-b", s)] for s in range(SEEDS))  # real text beats its shuffle
    [pair] = result["verdicts"]
    # two seeds decide only when their gaps nearly match (t-test, 1 degree of freedom): never the other way round
    assert (pair["a"], pair["b"]) == ("run-a", "run-b") and pair["verdict"] in ("a", "none")
    assert (out / "index.html").is_file()
    assert (runs / "run-b" / "ablations" / "run-a-vs-run-b.json").is_file()  # `report --compare` finds it

    artifact = prefect_api.artifacts(api_url, flow_run_id)["run-a-vs-run-b-ablation"]
    text = artifact["data"]
    assert f"- **{pair['text']}**" in text
    for summary in report["summary"]:
        assert f"| {summary['run']} | {summary['reference_loss_mean']:.4f} |" in text
    assert "Rule: paired two-sided t-test over 2 seed(s)" in text
    assert "tokens/s (median over models)" in text and "MFU" not in text  # no MFU on a CPU
    assert str(out / "index.html") in text

    messages = prefect_api.wait_for_logs(api_url, flow_run_id, f"model {2 * SEEDS}/{2 * SEEDS}: ", pair["text"])
    per_model = [m for m in messages if m.startswith("model ") and "reference loss" in m]
    assert len(per_model) == 2 * SEEDS
    assert any("training on run-b, seed 1" in m for m in messages)  # the job's own logger reaches the run log


BAD_INPUT = {
    "one-run": (lambda base: {"runs": [str(base / "run-a")]}, "an ablation compares at least two runs"),
    "missing-reference": (lambda base: {"reference": str(base / "missing.parquet")}, "missing.parquet"),
    "unknown-preset": (lambda base: {"preset": "huge"}, "preset"),
    "budget-below-one-step": (lambda base: {"tokens": 100}, "--tokens 100 is below one step"),
}
"""What the form can hold that nothing can be trained on, and what the one log line must say about it."""


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_fails_with_one_clear_line(api_url: str, runs: Path, case: str) -> None:
    params, expected = BAD_INPUT[case]
    given = {"runs": [str(runs / "run-a"), str(runs / "run-b")], "reference": str(runs / "reference.parquet")}
    state = _run(**{**given, **params(runs)})
    assert state.is_failed()
    flow_run_id = _flow_run_id(state)
    messages = prefect_api.wait_for_logs(api_url, flow_run_id, "nothing was trained: ")
    [line] = [m for m in messages if "nothing was trained" in m]
    assert expected in line, line
    tasks = prefect_api.task_runs(api_url, flow_run_id)
    assert all(t["run_count"] <= 1 for t in tasks.values())  # bad input is not retried


def test_ablate_deployment_form() -> None:
    deployments = {d.name: d for d in build_deployments() if d.flow_name == "ablate"}
    assert set(deployments) == {ABLATE}
    deployment = deployments[ABLATE]
    assert deployment.entrypoint == "flows.ablate_flow.ablate"
    assert deployment.enforce_parameter_schema
    assert "CUDA" in deployment.description and "bf16" in deployment.description
    schema = deployment._parameter_openapi_schema.model_dump()
    assert schema["required"] == ["runs", "reference"]  # the form asks for them
    assert schema["properties"]["preset"]["enum"] == ["auto", *PRESETS]
    assert set(get_args(AblatePreset)) == {"auto", *PRESETS}
    assert all(schema["properties"][name].get("description") for name in schema["properties"])
    params = deployment_parameters()[ABLATE]
    assert deployment.parameters == params
    validate(params, schema, raise_on_error=True, ignore_required=True)  # what the API checks when registering
    filled = {**params, "runs": ["a", "b"], "reference": "heldout.parquet"}
    validate(filled, schema, raise_on_error=True)  # what it checks when the form is submitted


def test_only_io_errors_are_retried() -> None:
    """A store's hiccup is worth one more try; bad input, a missing file or a failed training step is not."""
    from prefect.states import Failed

    from flows.ablate_flow import worth_retrying
    from pipeline.app.ablate import AblationInputError
    from pipeline.core.storage import StorageError

    def retried(exc: BaseException) -> bool:
        return worth_retrying(None, None, Failed(data=exc))  # type: ignore[arg-type]

    assert retried(ConnectionResetError("reset by peer")) and retried(TimeoutError("read timed out"))
    for exc in (
        AblationInputError("an ablation compares at least two runs"),
        StorageError("no such bucket"),
        FileNotFoundError("gone"),
        RuntimeError("CUDA out of memory"),
    ):
        assert not retried(exc), exc
