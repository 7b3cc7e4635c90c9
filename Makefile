# phenoflow — `make help` lists the targets.
#
# Every target that builds or runs something sources .phenoflow.env, which `make setup` writes:
# the project-local Python venv (libtorch and ONNX Runtime come from its wheels) and the library
# paths the stages need. `make setup` is idempotent and cheap when nothing changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PYTHON := $(VENV)/bin/python
ENV_FILE := $(ROOT)/.phenoflow.env
SETUP_STAMP := $(VENV)/.phenoflow-setup
REQUIREMENTS := tests/python/requirements.txt
ORT_VERSION := 1.31.1
BIN := $(ROOT)/target/release
DEMO_MODEL_EPOCHS ?= 20
WITH_ENV := source $(ENV_FILE) &&
BENCH_TRAIN_CELLS ?= 4096
BENCH_EMBED_CELLS ?= 20480
BENCH_FIELDS ?= 120
CP_BENCH_SIZES ?= 10,100
GPU_BUNDLE := $(ROOT)/gpu-bundle

JOBS ?= 2

.PHONY: help setup bins build test lint demo demo-cellprofiler demo-model demo-epochs pipeline pipelines-generated cli-docs table-docs bench-preprocess bench-profiles bench-cellprofiler bench-scale bench-train bench-embed synth-baseline gpu-bundle gpu-check gpu-check-cpu clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The venv is (re)installed when the requirements or the GPU situation change (the stamp records
# what was installed), so a second `make setup` only rewrites the env file. Large wheels (torch's
# CUDA libraries) resume after a dropped connection instead of failing the set-up.
setup: ## Create the Python venv (torch, onnxruntime, reference tools) and .phenoflow.env
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    ort="onnxruntime-gpu==$(ORT_VERSION)"; else ort="onnxruntime==$(ORT_VERSION)"; fi; \
	want="$$(cat $(REQUIREMENTS)) $$ort"; \
	if [ ! -x $(PYTHON) ]; then echo "setup: creating $(VENV)"; python3 -m venv $(VENV); fi; \
	if [ ! -f $(SETUP_STAMP) ] || [ "$$(cat $(SETUP_STAMP))" != "$$want" ]; then \
	    echo "setup: installing $(REQUIREMENTS) and $$ort into $(VENV) (torch is ~4.6 GB, about a minute)"; \
	    $(PYTHON) -m pip install --quiet --disable-pip-version-check --upgrade pip; \
	    $(PYTHON) -m pip install --quiet --disable-pip-version-check --resume-retries 20 -r $(REQUIREMENTS) "$$ort"; \
	    echo "$$want" > $(SETUP_STAMP); \
	else echo "setup: $(VENV) is up to date"; fi
	@site=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	ort_lib=$$(ls $$site/onnxruntime/capi/libonnxruntime.so.* | head -n 1); \
	test -d $$site/torch/lib || { echo "setup: torch/lib missing under $$site" >&2; exit 1; }; \
	{ echo "# Written by 'make setup'; sourced by every make target."; \
	  echo "export PHENOFLOW_ROOT=$(ROOT)"; \
	  echo "export PHENOFLOW_PYTHON=$(PYTHON)"; \
	  echo "export PATH=$(VENV)/bin:\$$PATH"; \
	  echo "export LIBTORCH_USE_PYTORCH=1"; \
	  echo "export PHENOFLOW_TORCH_LIB=$$site/torch/lib"; \
	  echo "export LD_LIBRARY_PATH=$$site/torch/lib\$${LD_LIBRARY_PATH:+:\$$LD_LIBRARY_PATH}"; \
	  echo "export ORT_DYLIB_PATH=$$ort_lib"; \
	  echo "export PHENOFLOW_SHARED_DATA=\$${PHENOFLOW_SHARED_DATA:-$(abspath $(ROOT)/../shared/data)}"; \
	} > $(ENV_FILE).tmp && mv $(ENV_FILE).tmp $(ENV_FILE)
	@echo "setup: wrote $(ENV_FILE)"

build: setup ## Build every stage (release)
	@$(WITH_ENV) cargo build --release --workspace --all-targets

test: build ## Run every test: unit tests and the end-to-end tests on real data
	@$(WITH_ENV) cargo test --release --workspace --all-targets

lint: setup ## cargo fmt --check and clippy -D warnings
	@$(WITH_ENV) cargo fmt --all --check && cargo clippy --release --workspace --all-targets -- -D warnings

bins: setup ## Build only the stage binaries (release)
	@$(WITH_ENV) cargo build --release --workspace --bins

demo: bins ## The whole pipeline on the synthetic screen; prints the NSC / NSCB accuracy and where the outputs are
	@$(WITH_ENV) $(BIN)/pf-run run pipelines/demo.toml --jobs 2
	@$(WITH_ENV) $(PYTHON) tests/python/print_metrics.py $(ROOT)/out/demo/metrics.parquet \
	    handcrafted=$(ROOT)/out/demo/handcrafted-metrics.parquet oracle=$(ROOT)/out/demo/oracle-metrics.parquet
	@echo "report:         $(ROOT)/out/demo/report/report.html (figures as PNGs beside it)"

demo-model: bins ## Train the model the demo starts from, models/demo-cytovae (DEMO_MODEL_EPOCHS=20 CPU epochs: about an hour on 2 cores)
	@$(WITH_ENV) $(BIN)/pf-run run pipelines/demo.toml --only synth && $(BIN)/pf-run run pipelines/demo.toml --only preprocess
	@rm -rf $(ROOT)/out/demo-model
	@$(WITH_ENV) $(BIN)/pf-train generative --cells out/demo/cells.shard0.parquet --cells out/demo/cells.shard1.parquet \
	    --output out/demo-model --model cytovae --epochs $(DEMO_MODEL_EPOCHS) --batch-size 64 --latent-dim 64 \
	    --beta 1.0 --seed 0
	@mkdir -p $(ROOT)/models/demo-cytovae
	@cp $(ROOT)/out/demo-model/model_card.json $(ROOT)/out/demo-model/checkpoint.safetensors \
	    $(ROOT)/out/demo-model/training_state.safetensors $(ROOT)/out/demo-model/training_log.parquet \
	    $(ROOT)/models/demo-cytovae/
	@echo "demo-model: wrote $(ROOT)/models/demo-cytovae (set epochs = $(DEMO_MODEL_EPOCHS) in pipelines/demo.toml's train step)"

demo-epochs: bins ## NSC / NSCB of the demo's CytoVAE after 2, 5, 10 and 20 CPU epochs, beside hand-crafted and oracle (hours; after make demo)
	@$(WITH_ENV) tests/demo_epochs.sh $(ROOT)/out/demo-epochs

pipeline: bins ## Run a pipeline file: make pipeline PIPELINE=pipelines/bbbc021.toml [JOBS=2]
	@test -n "$(PIPELINE)" || { echo "make pipeline: set PIPELINE=pipelines/<name>.toml" >&2; exit 2; }
	@$(WITH_ENV) $(BIN)/pf-run run $(PIPELINE) --jobs $(JOBS)

demo-cellprofiler: bins ## The classical path: a 10-plate CellProfiler screen scaled from the real SQLite backend, through pipelines/cellprofiler.toml
	@$(WITH_ENV) backend=$${PHENOFLOW_SHARED_DATA}/cellprofiler/nf1_schwann/all_cellprofiler.sqlite; \
	    test -f $$backend || { echo "demo-cellprofiler: $$backend is missing: set PHENOFLOW_SHARED_DATA to the shared data folder (its README lists cellprofiler/)" >&2; exit 2; }; \
	    $(PYTHON) tests/python/make_cp_screen.py $$backend out/cp-screen --plates 10
	@$(WITH_ENV) $(BIN)/pf-run run pipelines/cellprofiler.toml
	@$(WITH_ENV) $(PYTHON) tests/python/print_metrics.py "CellProfiler=$(ROOT)/out/cellprofiler/metrics.parquet"
	@echo "demo-cellprofiler: report in out/cellprofiler/report/report.html"

pipelines-generated: bins ## Regenerate pipelines/generated/<name>/{pipeline.mk,Snakefile,main.nf}
	@$(WITH_ENV) for file in pipelines/*.toml; do \
	    name=$$(basename $$file .toml); mkdir -p pipelines/generated/$$name; \
	    $(BIN)/pf-run emit make $$file -o pipelines/generated/$$name/pipeline.mk; \
	    $(BIN)/pf-run emit snakemake $$file -o pipelines/generated/$$name/Snakefile; \
	    $(BIN)/pf-run emit nextflow $$file -o pipelines/generated/$$name/main.nf; \
	done

cli-docs: bins ## Regenerate docs/cli/ (the --help of every stage and subcommand; a test checks for drift)
	@$(WITH_ENV) tests/cli_docs.sh $(BIN) docs/cli

table-docs: ## Regenerate the column tables of schemas/tables/*.md from the table specs (a test checks for drift)
	@cargo run --release --quiet -p phenoflow-schemas --example table_docs

bench-preprocess: build ## pf-preprocess vs numpy+tifffile+scikit-image on the same fields (BENCH_FIELDS=120)
	@$(WITH_ENV) $(PYTHON) tests/python/bench_preprocess.py --bin $(BIN)/pf-preprocess --n-fields $(BENCH_FIELDS) --workdir $(ROOT)/bench-out/preprocess

bench-profiles: build ## pf-aggregate + pf-classify vs pycytominer + scikit-learn (500k cells x 256 features)
	@$(WITH_ENV) $(PYTHON) tests/python/bench_profiles.py --bin-dir $(BIN) --workdir $(ROOT)/bench-out/profiles

bench-cellprofiler: build ## CellProfiler SQLite → per-well profiles: pf-cellprofiler + pf-aggregate vs pycytominer SingleCells, at 10x and 100x the real backend (CP_BENCH_SIZES)
	@$(WITH_ENV) $(PYTHON) tests/python/bench_cellprofiler.py --bin-dir $(BIN) --workdir $(ROOT)/bench-out/cellprofiler \
	    --backend $${PHENOFLOW_SHARED_DATA}/cellprofiler/nf1_schwann/all_cellprofiler.sqlite --sizes $(CP_BENCH_SIZES)

bench-scale: bins ## pf-preprocess, pf-embed, pf-aggregate at 1x, 4x, 16x a 24-field screen: time, peak memory, the full BBBC021 extrapolated
	@$(WITH_ENV) $(PYTHON) tests/python/bench_scale.py --bin-dir $(BIN) --workdir $(ROOT)/bench-out/scale

bench-train: build ## pf-train vs a PyTorch loop of the same CytoVAE, batch and data (BENCH_TRAIN_CELLS=4096)
	@$(WITH_ENV) $(PYTHON) tests/python/bench_train.py --bin-dir $(BIN) --n-cells $(BENCH_TRAIN_CELLS) \
	    --fixture $${PHENOFLOW_SHARED_DATA}/bbbc021/singlecell_tiny --workdir $(ROOT)/bench-out/train

bench-embed: build ## pf-embed (ONNX Runtime) vs PyTorch eager with the same weights on the same cells (BENCH_EMBED_CELLS=20480)
	@$(WITH_ENV) $(PYTHON) tests/python/bench_embed.py --bin-dir $(BIN) --n-cells $(BENCH_EMBED_CELLS) \
	    --fixture $${PHENOFLOW_SHARED_DATA}/bbbc021/singlecell_tiny --workdir $(ROOT)/bench-out/embed

synth-baseline: build ## The demo synthetic screen → cells → hand-crafted-feature NSC/NSCB baseline
	@$(WITH_ENV) $(BIN)/pf-synth --output $(ROOT)/out/synthetic --force --panel $(ROOT)/out/synthetic-panel.png
	@$(WITH_ENV) $(BIN)/pf-preprocess bbbc021 --image-csv $(ROOT)/out/synthetic/BBBC021_v1_image.csv \
	    --moa-csv $(ROOT)/out/synthetic/BBBC021_v1_moa.csv --output $(ROOT)/out/synthetic-cells.parquet
	@$(WITH_ENV) $(PYTHON) tests/python/handcrafted_baseline.py $(ROOT)/out/synthetic-cells.parquet

gpu-bundle: bins ## What a GPU machine without Rust needs for the GPU check, in gpu-bundle/ (< 60 MiB; docs/gpu.md)
	@tests/gpu/bundle.sh $(BIN) $(GPU_BUNDLE) 60

gpu-check: gpu-bundle ## The GPU check on this machine's GPU: every figure of docs/gpu.md into gpu-check-out/
	@$(WITH_ENV) $(GPU_BUNDLE)/run.sh --out $(ROOT)/gpu-check-out

gpu-check-cpu: gpu-bundle ## The GPU check's dry run on the CPU (tiny data; make test runs it too)
	@$(WITH_ENV) $(GPU_BUNDLE)/run.sh --cpu --out $(ROOT)/gpu-check-out/cpu --work $(ROOT)/gpu-check-out/cpu-work

clean: ## Remove build outputs and bench/demo outputs (keeps the venv)
	cargo clean
	rm -rf out bench-out gpu-bundle gpu-check-out
