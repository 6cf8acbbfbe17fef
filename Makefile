# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out
TORCH  ?= torch==2.13.0

.PHONY: install browser demo ui test lint bench bench-spark clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cc-refinery needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'   # first, so [train] does not pull a larger CUDA build
	$(BIN)/python -m pip install --quiet -e '.[dev,train,spark]'
	$(BIN)/refinery tokenizer fetch all   # GPT-2 / cl100k rank files into the local cache, verified by sha256
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

browser:  ## headless Chromium for the browser tests (Debian package, where this user may install it)
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "note: could not install chromium; browser tests will skip"; \
	  else echo "note: chromium not found and not installable here; browser tests will skip"; fi; }

demo: install  ## run the whole pipeline on the embedded sample crawl
	$(BIN)/refinery run --sample --output $(OUT) --keep-rejected --workers 2 --validate

ui: install  ## local Prefect server (SQLite) on 127.0.0.1 with the deployments served; prints the URL
	$(BIN)/python -m flows.ui

test: install browser  ## run the test suite (fails if no test is collected)
	$(BIN)/python -m pytest -q

lint: install  ## ruff, and the import contracts that keep the layers one-way (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

bench: install  ## the shorter benchmarks (the long ones: bench/README.md); results go to BENCHMARKS.md by hand
	$(BIN)/python -m bench.bench_warc_readers
	$(BIN)/python -m bench.bench_extraction_quality
	$(BIN)/python -m bench.bench_fast_trafilatura
	$(BIN)/python -m bench.bench_pipeline
	$(BIN)/python -m bench.bench_tokenize
	$(BIN)/python -m bench.bench_url_filter
	$(BIN)/python -m bench.bench_filters
	$(BIN)/python -m bench.bench_pii
	$(BIN)/python -m bench.bench_quality_classifier
	$(BIN)/python -m bench.bench_decontaminate
	$(BIN)/python -m bench.bench_stage_share

bench-spark: install  ## Spark engine: local[1] vs local[2] scaling, Spark vs local, dedup at 500k documents
	$(BIN)/python -m bench.bench_spark

clean:
	rm -rf $(OUT) .pytest_cache .prefect
