# One-command setup. Every target creates .venv (with the exact versions of
# constraints.txt) the first time, and reinstalls when a requirements file changes.
#   make lab    open the notebooks in JupyterLab
#   make test   lint, unit tests, then every notebook executed in smoke mode
#   make ci     what CI runs: make test, then the unit tests again on the lowest
#               supported stack (make unit-lowest, constraints-lowest.txt)
#   make bench  the benchmarks: input pipeline, DropBlock's cost, the modern network's
#               speed against the original (tables + JSON)
#   make series every notebook in full mode, headless and in order, on a GPU with the
#               real data; resumes where it stopped; table in series/results.md
#   make gpu-check  is this GPU machine ready? tests, smoke notebooks, a full-size step
#               of every model, determinism, benchmark (reduced form on a CPU)
#   make links  point badges, install cells and Colab links at pyproject's Repository
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
# Seconds one notebook cell may run under nbval before the test fails.
CELL_TIMEOUT ?= 600
# Processes the unit tests run in (pytest-xdist; each test file runs in one of them).
WORKERS ?= 2
LINTED := cifar_helpers tests notebooks benchmarks tools
# The lowest supported stack's venv (make unit-lowest), and the tests it leaves out:
# they test the tools (papermill, the GPU check), not how the helpers use Keras.
LOWEST_VENV := .venv-lowest
LOWEST_SKIPS := --ignore=tests/test_series.py --ignore=tests/test_gpu_check.py
UNIT_ARGS ?=
# JupyterLab refuses to run as root (containers, some cloud machines) without this.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
# Options of tools/series.py, e.g. SERIES_ARGS="--only 04" or "--smoke --data synthetic"
# or "-p EPOCHS 10" (see tools/series.py --help).
SERIES_ARGS ?=

.PHONY: install gpu-check lab lint format test ci unit unit-lowest notebooks links \
	bench bench-pipeline bench-dropblock bench-modern bench-modern-gpu series \
	constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements.txt $(CONSTRAINTS) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c $(CONSTRAINTS) -r requirements.txt -e .
	touch $@

install: $(VENV)/.installed

# GPU readiness in one command (tools/gpu_check.py), within 8 minutes on one GPU: the
# unit tests, every notebook in smoke mode on the GPU, a full-size training step of
# every model (precision, XLA, memory), seeded determinism and the modern-speed
# benchmark; writes gpu_check.json. Without a GPU it runs a reduced form of the same
# checks (CI-sized). GPU_CHECK_ARGS, e.g. "--form reduced" or "--out F".
gpu-check: install
	$(BIN)/python tools/gpu_check.py $(GPU_CHECK_ARGS)

lab: install
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: install
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

unit: install
	$(BIN)/pytest -n $(WORKERS) --dist loadfile tests $(UNIT_ARGS)

# The unit tests on the lowest versions requirements.txt declares, in their own venv:
# every declared lower bound is a tested one.
unit-lowest:
	$(MAKE) unit VENV=$(LOWEST_VENV) CONSTRAINTS=constraints-lowest.txt \
		UNIT_ARGS="$(LOWEST_SKIPS)"

# CPU only, as the unit tests (tests/conftest.py): the same result on any machine.
notebooks: install
	CUDA_VISIBLE_DEVICES= CIFAR_SMOKE=1 CIFAR_DATA=synthetic $(BIN)/pytest --nbval-lax \
		--nbval-cell-timeout=$(CELL_TIMEOUT) notebooks/

test: lint unit notebooks

ci: test unit-lowest

# Point every Colab badge, install cell and Colab link at pyproject.toml's Repository
# (after changing it on a fork); CHECK=1 only lists the files that disagree.
links: install
	$(BIN)/python tools/links.py $(if $(CHECK),--check)

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

# The whole series as the notebooks' full runs (hours on a GPU; the data downloaded
# once): executed notebooks, run folders and the results table under series/. Run it
# again after a failure or an interruption and it continues from where it stopped.
series: install
	$(BIN)/python tools/series.py $(SERIES_ARGS)

# Re-pin constraints.txt from .venv (after `make clean; make install CONSTRAINTS=/dev/null`).
constraints: install
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } \
		> constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .ruff_cache
