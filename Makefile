# Shortcuts; each target is one command you can also type yourself.
PYTHON ?= python
IMAGE ?= restik:dev
BUILD_IMAGE ?= ../shared/tools/build-image.sh

.PHONY: test lint format bench mutate image

test:
	bash .ci/run

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

bench:
	$(PYTHON) bench/run.py --quick

# Mutation testing of the pure core (cosmic-ray, ~17 min of one core; not in `make test`):
# the score per module, non-zero exit below 90 %. Needs `pip install -e ".[test,mutate]"`.
mutate:
	$(PYTHON) bench/mutate.py

# Builds the Dockerfile without Docker (buildah/podman; installs them on first use) and
# smoke-runs the image.
image:
	$(BUILD_IMAGE) -t $(IMAGE) . -- restik --version
