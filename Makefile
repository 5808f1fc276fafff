# One command to set up and open napari on the bundled samples, one to run the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.installed

# Opens napari with the plugin on the bundled chest X-ray and chest CT samples (side by side).
demo: setup
	$(BIN)/synthseg view --sample cxr --sample ct

# The test command (CI runs exactly this): manifest check, then every test under a virtual display.
test: setup
	$(BIN)/npe2 validate napari-synthseg
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/ruff check src benchmarks
	$(BIN)/mypy
	xvfb-run -a -s "-screen 0 1920x1080x24" $(BIN)/python -m pytest

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
