# Two entry points: `make demo` and `make test`. Each creates .venv and installs into it:
# the library with every extra (all), the demo's UI tools (demo), the test tools (dev) and
# the docs site's generator (docs). A user's own project needs only `pip install embed_assets`
# and the extras it uses (docs/getting-started.md).
VENV    := .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export LANCE_LOG := error
# mkdocs-material prints a banner about its successor on every build otherwise
export NO_MKDOCS_2_WARNING := 1
export EMBED_ASSETS_STORE ?= $(CURDIR)/.embed_store
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
UI_PORT ?= 3000

.PHONY: install demo test stress ui lint bench browser-deps docs docs-serve

# dg, Dagster 1.13's CLI, with this venv as the project's ("activated": else dg warns that
# ./.venv is not the active environment).
DG      := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

$(STAMP): pyproject.toml constraints.txt setup.py $(wildcard embed_assets/sql/native/*.c embed_assets/sql/native/*.h) embed_assets/sql/native/build.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -e '.[all,demo,dev,docs]'
	touch $(STAMP)

install: $(STAMP)

# The demo pipeline (Dagster, real model, real Debian text) into the default store,
# then a query on what it wrote. dg.toml makes the root the demo's dg project.
demo: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(DG) launch --assets '*'
	$(BIN)/embed-assets versions debian_embeddings
	$(BIN)/embed-assets search debian_embeddings "edit source code with syntax highlighting" -k 5
	$(BIN)/embed-assets sql "SELECT k.package, k.section, round(k.distance, 3) AS distance, k.rank \
	  FROM knn('debian_embeddings', (SELECT vector FROM debian_section_centroids WHERE section = 'editors'), 5) k"
	$(BIN)/embed-assets sql "SELECT section, count(*) AS packages, \
	  round(vec_norm(vec_mean(vector)), 3) AS mean_norm FROM \"debian_embeddings@prod\" GROUP BY section ORDER BY packages DESC, section LIMIT 4"
	@echo
	@echo "Browse it: make ui   (dg dev on http://127.0.0.1:$(UI_PORT))"

# Both code locations (workspace.yaml): plain `dg dev` would serve the dg project alone.
ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(DG) dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

# Chromium + playwright-core for the browser test; the test skips (with a reason) without them.
browser-deps:
	scripts/install_browser_deps.sh || echo "browser test dependencies unavailable: that test will skip"

test: $(STAMP) browser-deps
	$(BIN)/mypy
	$(PY) -m pytest -q --durations=25

# The long fault-injection run: 15 SIGKILLs per operation, 20 rounds of 4 concurrent
# writers, a minute of readers under writes and cleanup (CI runs the short pass in `make test`).
stress: $(STAMP)
	EMBED_ASSETS_STRESS=full $(PY) -m pytest -q tests/test_faults.py tests/test_reliability.py tests/test_bad_input_matrix.py tests/test_concurrency.py tests/test_search_fuzz.py

# The docs site (mkdocs + material) into site/; the test suite builds it with --strict.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(PIP) -e '.[bench]'
	$(PY) benchmarks/run.py
