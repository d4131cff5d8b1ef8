# Two commands do all the set-up on a fresh machine: `make repro` (main job), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# DVC stage commands call `python`/`liveml`: make them the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: venv chromium params repro repro-check test test-slow lint bandit format lock bench bench-serve bench-drift model-diff serve exps clean-venv

# The venv is (re)built from the hashed lock whenever the lock changes.
$(VENV)/.synced: requirements.lock requirements-bootstrap.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements-bootstrap.lock
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.synced

# The browser tests drive Debian's chromium headless; install it when missing (as root, like CI).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

params: venv
	$(BIN)/liveml params

# Regenerate params.yaml and dvc.yaml from conf/ (and the installed tasks) first, so an edit in
# conf/ re-runs exactly what it affects.
repro: params
	$(BIN)/dvc repro

# pytest exits 5 when it collected no tests: that is a failure, not a pass.
test: venv chromium
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: venv chromium
	$(BIN)/pytest -m slow

# ruff skips files without a .py suffix when it scans folders: name the CI script.
LINTED := src tests bench examples docs .ci/model-diff .ci/repro-check

# Style (ruff) and security (bandit: medium and high findings; each exemption is justified in
# place) of everything CI checks.
lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/bandit -r src -ll -q

bandit: venv
	$(BIN)/bandit -r src -ll -q

format: venv
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock

bench: venv
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/sweep.py --epochs 8 --n-train 320
	$(BIN)/python bench/compare.py

# Detection rate and false alarms of `liveml monitor` per drift scenario (needs `make repro`).
bench-drift: venv
	$(BIN)/python bench/drift_power.py --task all

# Does a fresh `dvc repro` of HEAD (empty DVC cache, every stage run) give the committed model,
# data and metrics? As long as `make repro`; exits 1 naming each output that differs.
repro-check: venv
	.ci/repro-check

# What this checkout does to the model vs BASE: the tiny pipeline on both, metrics/params diff.
BASE ?= origin/main
model-diff: venv
	.ci/model-diff $(BASE)

bench-serve: venv
	$(BIN)/python bench/serve.py --task defects
	$(BIN)/python bench/serve.py --task speech

# DVC's experiments table with only the columns that differ between its rows: the plain
# `dvc exp show` has a column for every tracked param (~240 here), far wider than a screen.
exps: venv
	$(BIN)/dvc exp show --only-changed

# Serve the pipeline's exported models (run `make repro` first) on http://127.0.0.1:8000.
serve: venv
	$(BIN)/liveml serve

clean-venv:
	rm -rf $(VENV)
