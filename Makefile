# Two commands on a fresh machine:  `make repro` (whole pipeline on the embedded data)  and  `make test`.
PY := .venv/bin/python
export DVC_NO_ANALYTICS := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install repro test lint bench readme clean-venv

# Idempotent: re-runs pip only when requirements.txt or the installer changed.
.venv/.installed: requirements.txt requirements-nodeps.txt scripts/install.sh scripts/install_detectron2.sh
	bash scripts/install.sh
	touch $@

install: .venv/.installed

# make repro PROFILE=paper  -> switch params.yaml to profiles/paper.yaml first (see README)
repro: install
	$(if $(PROFILE),$(PY) -m mal profile $(PROFILE),)
	$(PY) scripts/check_params.py params.yaml   # a bad key stops here, in one line, before any stage
	dvc repro

test: install
	bash scripts/install_browser.sh   # Debian's chromium + chromedriver for the review page's browser test
	$(PY) -m ruff check mal stages pipeline tests scripts benchmarks
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check mal stages pipeline tests scripts benchmarks

# Speed ratios of the labeler step and of pseudo-labelling (prints numbers, asserts nothing; see README).
# bench_pseudo_label.py / bench_shards.py read data/prepared/ and models/labeler/<L>/ (each demo labeler): run `make repro` first.
bench: install
	$(PY) benchmarks/bench_labeler.py --threads 2
	for L in vit_tiny vit_small_dinov2 efficientnet_lite0; do $(PY) benchmarks/bench_pseudo_label.py --labeler $$L --max-boxes 445 || exit 1; done
	$(PY) benchmarks/bench_ddp.py
	$(PY) benchmarks/bench_shards.py

# README's results block from reports/ and metrics/ (after `make repro`); `--check` is what the tests run.
readme: install
	$(PY) scripts/render_readme.py

clean-venv:
	rm -rf .venv
