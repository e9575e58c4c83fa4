# Everything installs from nothing: `make test` or `make demo` on a fresh machine needs no other step.
PYTHON ?= python3
VENV ?= .venv
# The CPU build by default; GPU users override it, e.g. make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.xllm-installed
PLUGIN := plugins/xllm-example-plugin
# DeepSpeed compiles a small op on first use; keep the cache inside the checkout so one CI run compiles it once.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-fast demo lint format completions bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[gptq,dev]"
	$(PIP) install -e $(PLUGIN)
	touch $(STAMP)

# Exit code 5 (no tests collected) is a failure too: a suite that runs nothing must not pass. Lint first: it takes a
# second and keeps main ruff-clean.
test: install
	$(VENV)/bin/ruff check xllm_cli tests bench plugins
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: install
	$(PY) -m pytest -q -m "not slow"

DEMO ?= demo_run
XLLM := $(VENV)/bin/xllm
DEMO_FLAGS := --model-name-or-path $(DEMO)/tiny-model --dataset-key demo --train-local-path-to-data $(DEMO)/train.jsonl

# The whole pipeline, offline, on a tiny model made here and the demo dataset shipped in the package.
demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(XLLM) tiny $(DEMO)/tiny-model
	$(XLLM) download $(DEMO_FLAGS)
	$(XLLM) train $(DEMO_FLAGS) --apply-lora --max-steps 30 --learning-rate 1e-2 --warmup-steps 0 --logging-steps 5 --per-device-train-batch-size 4 --output-dir $(DEMO)/adapter
	$(XLLM) fuse --model-name-or-path $(DEMO)/tiny-model --lora-model-local-path $(DEMO)/adapter --fused-model-local-path $(DEMO)/fused
# Groups of 32: the tiny model's layers are 64 and 128 wide (the default 128 must divide every layer width).
	$(XLLM) quantize --model-name-or-path $(DEMO)/fused --dataset-key demo --train-local-path-to-data $(DEMO)/train.jsonl --gptq-group-size 32 --max-length 128 --quantized-model-path $(DEMO)/quantized
	@echo "demo artifacts: model $(DEMO)/tiny-model, data $(DEMO)/train.jsonl, LoRA adapter $(DEMO)/adapter, fused model $(DEMO)/fused, GPTQ model $(DEMO)/quantized (perplexity in $(DEMO)/quantized/quality.json)"

lint: install
	$(VENV)/bin/ruff check xllm_cli tests bench plugins
	$(VENV)/bin/ruff format --check xllm_cli tests bench plugins

format: install
	$(VENV)/bin/ruff format xllm_cli tests bench plugins
	$(VENV)/bin/ruff check --fix xllm_cli tests bench plugins

completions: install
	$(PY) -m xllm_cli.completion_scripts completions

bench: install
	$(PY) bench/startup.py
	$(PY) bench/prepare.py
	$(PY) bench/train.py
	$(PY) bench/fuse.py

clean:
	rm -rf $(VENV) .cache .pytest_cache build *.egg-info
