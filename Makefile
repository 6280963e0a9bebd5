# One-command setup. Every target creates .venv (with the exact versions of
# constraints.txt) the first time, and reinstalls when a requirements file changes.
#   make lab    open the notebooks in JupyterLab
#   make test   lint, unit tests, then every notebook executed in smoke mode (CI runs this)
#   make bench  the benchmarks: input pipeline, DropBlock's cost, the modern network's
#               speed against the original (tables + JSON)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
# Seconds one notebook cell may run under nbval before the test fails.
CELL_TIMEOUT ?= 600
# Processes the unit tests run in (pytest-xdist; each test file runs in one of them).
WORKERS ?= 2
LINTED := cifar_helpers tests notebooks benchmarks
# JupyterLab refuses to run as root (containers, some cloud machines) without this.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: install lab lint format test unit notebooks bench bench-pipeline \
	bench-dropblock bench-modern bench-modern-gpu constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements.txt $(CONSTRAINTS) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c $(CONSTRAINTS) -r requirements.txt -e .
	touch $@

install: $(VENV)/.installed

lab: install
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: install
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

unit: install
	$(BIN)/pytest -n $(WORKERS) --dist loadfile tests

# CPU only, as the unit tests (tests/conftest.py): the same result on any machine.
notebooks: install
	CUDA_VISIBLE_DEVICES= CIFAR_SMOKE=1 CIFAR_DATA=synthetic $(BIN)/pytest --nbval-lax \
		--nbval-cell-timeout=$(CELL_TIMEOUT) notebooks/

test: lint unit notebooks

bench: bench-pipeline bench-dropblock bench-modern

bench-pipeline: install
	$(BIN)/python benchmarks/pipeline_throughput.py

bench-dropblock: install
	$(BIN)/python benchmarks/dropblock_cost.py

bench-modern: install
	$(BIN)/python benchmarks/modern_speed.py

# On a GPU or TPU machine: mixed precision for the hardware, XLA, the recipes' batches.
bench-modern-gpu: install
	$(BIN)/python benchmarks/modern_speed.py --gpu

# Re-pin constraints.txt from .venv (after `make clean; make install CONSTRAINTS=/dev/null`).
constraints: install
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } \
		> constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
