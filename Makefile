# slidebench: the two commands are `make reproduce` and `make test` (see README.md).
# Both create or reuse .venv and install what is needed from the package registries.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
SCALE  ?=
DATA_DIR ?=
SEEDS  ?=
EXTRAS ?= test,tf,bench,reference
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv build test test-fast reproduce tune long gpu roofline figures report asv clean-results clean help

help:
	@echo "make reproduce [SCALE=small|medium|paper] [DATA_DIR=...]  build, generate data, run every experiment, figures, report"
	@echo "                                          (no SCALE: each file's own [data] scale: fig5/fig7 medium, the rest small)"
	@echo "make tune                                          rerun the tuning experiment (experiments/tune.toml) and print the chosen values"
	@echo "make long                                          budget check: headline systems 120 s; TF sampled, SLIDE 360 s at three lrs (~64 min)"
	@echo "make gpu                                           where PyTorch sees a CUDA GPU: SLIDE on every core vs dense softmax on the GPU (~14 min)"
	@echo "make roofline                                      TF full softmax's output-layer FLOP rate vs numpy SGEMM (benchmarks/tf_shape.py)"
	@echo "make test                                          build and run the test suite"
	@echo "make figures                                       redraw figures and report from existing logs (no training)"
	@echo "make asv                                           quick asv run of the engine benchmarks"
	@echo "make clean-results                                 delete results (the only target that does)"

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "setuptools>=77" wheel "cython>=3.0" "numpy>=1.26"
	$(VPY) -m pip install -q --no-build-isolation -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

# Recompile the engine after editing engine/*.pyx|pxd|h (the import refuses a stale build).
build: venv
	$(VPY) setup.py -q build_ext --inplace

test: build
	@$(VPY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

test-fast: build
	@$(VPY) -m pytest -q -m "not tf and not slow"; rc=$$?; [ $$rc -eq 5 ] && exit 1; exit $$rc

reproduce: build
	$(VPY) -m slidebench reproduce $(if $(SCALE),--scale $(SCALE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(SEEDS),--seeds $(SEEDS))

# Learning rates (and TF sampled softmax's fraction) per system on a validation split of the training
# set, the same number of trials per system; prints the chosen values (copy them into fig5/fig7.toml).
tune: build
	$(VPY) -m slidebench run experiments/tune.toml --resume
	$(VPY) benchmarks/tune_pick.py --experiment tune

# Budget check: the headline systems at their tuned lrs for 120 s, one seed, amazon and delicious, and
# TF sampled softmax and SLIDE each alone for 360 s at three lrs (~64 min on 2 cores); not part of reproduce. Summaries and figures go to results/ like the others'.
long: build
	$(VPY) -m slidebench run experiments/long.toml --resume
	$(VPY) -m slidebench run experiments/long_delicious.toml --resume
	$(VPY) -m slidebench run experiments/long_sampled.toml --resume
	$(VPY) -m slidebench run experiments/long_slide.toml --resume
	$(VPY) -m slidebench summarize long long_delicious long_sampled long_slide
	$(VPY) -m slidebench plot long long_delicious long_sampled long_slide
	$(VPY) -m slidebench report

# SLIDE on every CPU core against the dense full softmax on a GPU (PyTorch: experiments/gpu.toml), with
# the lr check (gpu_lr.toml) and the GPU step time (benchmarks/gpu_shape.py). Needs PyTorch with CUDA in
# the venv (pip install torch); a machine without a GPU logs the dense rows as skipped.
gpu: build
	@$(VPY) -c "import torch" || { echo "make gpu needs PyTorch: $(VPY) -m pip install torch"; exit 1; }
	@$(VPY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || \
	  { echo "make gpu needs a CUDA GPU that PyTorch can see (torch.cuda.is_available() is False here)"; exit 1; }
	$(VPY) -m slidebench run experiments/gpu.toml --resume
	$(VPY) -m slidebench run experiments/gpu_lr.toml --resume
	$(VPY) benchmarks/gpu_shape.py --labels 100000 200000 670091
	$(VPY) -m slidebench summarize gpu gpu_lr
	$(VPY) -m slidebench plot gpu gpu_lr
	$(VPY) -m slidebench report

# Dense baseline against its roofline: writes results/summary/roofline.csv.
roofline: build
	$(VPY) benchmarks/tf_shape.py --roofline --labels 200000 --threads $$(nproc) --csv results/summary/roofline.csv

figures: venv
	$(VPY) -m slidebench plot && $(VPY) -m slidebench report

report: figures

asv: build
	$(VPY) -m asv machine --yes
	$(VPY) -m asv run --python=same --quick --show-stderr $(ASV_ARGS)

clean-results:
	rm -rf results/raw results/summary results/figures results/REPORT.md

clean:
	rm -rf build engine/*.c engine/*.so engine/_buildinfo.py *.egg-info
