# Shortcuts; each target is one command you can also type yourself.
PYTHON ?= python
IMAGE ?= restik:dev
BUILD_IMAGE ?= ../shared/tools/build-image.sh

.PHONY: test lint format bench image

test:
	bash .ci/run

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

bench:
	$(PYTHON) bench/run.py --quick

# Builds the Dockerfile without Docker (buildah/podman; installs them on first use) and
# smoke-runs the image.
image:
	$(BUILD_IMAGE) -t $(IMAGE) . -- restik --version
