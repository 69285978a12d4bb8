# Two entry points for a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KERNEL_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu) setup.py pyproject.toml

.PHONY: venv build demo test clean

venv: $(VENV)/.deps
$(VENV)/.deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Compiles lpfast._C in place (CUDA sources too when nvcc and a CUDA torch are present;
# LPFAST_CUDA=0/1 forces them off/on).
build: $(VENV)/.built
$(VENV)/.built: $(VENV)/.deps $(KERNEL_SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

# The main job on the embedded MNIST subset: no data folder, no network.
demo: build
	$(PY) -m lpfast.info
	$(PY) -m lpfast train --model mnist_resnet --dataset embedded --epochs 3

test: build
	$(PY) -m lpfast.info
	$(PY) -m pytest -q

clean:
	rm -rf build lpfast/_C*.so *.egg-info $(VENV)
