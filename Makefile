# Two commands for a newcomer: `make demo` (install + run the built-in experiment) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cimkit-installed

# torch is installed first, on its own, as a CPU build: left to resolve `torch` itself, pip on Linux
# fetches the multi-GB CUDA build from PyPI. Any torch >= 2.1 works; 2.13.0 is pinned because it is the
# version every published figure was measured with (torch 2.13.0+cpu). TORCH_PIP_ARGS points pip at a
# CPU wheel index, e.g. make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
# Where pip already finds a CPU wheel (a local wheelhouse, macOS, Windows) it can stay empty.
TORCH          ?= torch==2.13.0
TORCH_PIP_ARGS ?=

# The real datasets (MNIST, Fashion-MNIST, tinyshakespeare) when a ../shared/datasets folder exists;
# otherwise CIMKIT_DATA is left as the environment has it and the tests that need those files skip.
SHARED_DATA := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export CIMKIT_DATA ?= $(SHARED_DATA)
endif

.PHONY: install demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) '$(TORCH)'
	# nothing below may re-resolve torch (the extras are checked with pip install --dry-run)
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/cimkit run --threads 1 --out runs/demo

lint: install
	$(BIN)/ruff check src tests benchmarks docs

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: install lint docs
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
