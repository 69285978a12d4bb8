# Two entry points for a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KERNEL_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu) setup.py pyproject.toml

.PHONY: venv build demo test gpu-check clean

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

# The main job on the embedded MNIST subset (no data folder, no network): lpfast's default
# layer-parallel method on 2 one-thread torchrun workers against backprop on one and DDP on two.
demo: build
	$(PY) -m lpfast.demo

test: build
	$(PY) -m lpfast.info
	$(PY) -m pytest -q

# On a GPU machine whose $(PYTHON) already has a CUDA build of torch (no venv): build the CUDA kernels,
# run the kernel tests (their CUDA cases run wherever torch sees a GPU) and the kernel benchmark on
# the GPU, writing kernels-cuda.{json,md} to $(KERNEL_RESULTS).
KERNEL_RESULTS ?= bench/results
gpu-check:
	LPFAST_CUDA=1 $(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PYTHON) -m lpfast.info
	$(PYTHON) -m pytest -q tests/test_ops.py tests/test_ds_ops.py tests/test_store_ops.py tests/test_augment.py
	$(PYTHON) bench/kernels.py --device cuda --out $(KERNEL_RESULTS)

clean:
	rm -rf build lpfast/_C*.so *.egg-info $(VENV)
