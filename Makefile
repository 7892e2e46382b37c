# voicemesh: `make demo` runs a real call through an embedded mesh; `make test` runs lint, then every test
# tier (unit, integration, system); `make test-fast` the unit tier; `make lint` ruff, mypy and the import
# layers; `make bench` measures; `make infra-check` validates the Terraform deploy offline.
# Both set up .venv from scratch (Debian packages through apt when run as root, Python packages through pip).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_TEST  := etcd-server etcd-client bind9-dnsutils chromium iproute2 nftables libopus0 janus cloud-init nginx iptables
APT_BENCH := coturn gcc dnsperf janus
APT_BASE  := python3-venv

.PHONY: demo test bench setup apt-base apt-test apt-bench clean call-page-png

demo: setup
	$(BIN)/voicemesh demo

test: setup apt-test checkov lint
	$(BIN)/pytest -q

bench: setup apt-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | apt-base
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# apt-get only runs for what is missing, so repeated runs stay offline and fast.
apt-base:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || scripts/apt-ensure $(APT_BASE)
apt-test:
	@scripts/apt-ensure $(APT_TEST)
apt-bench:
	@scripts/apt-ensure $(APT_BENCH)

# The README's screenshot of the call page, taken in headless Chromium during a live call by the test.
call-page-png: setup apt-test
	VOICEMESH_CALL_PAGE_PNG=docs/call-page.png $(BIN)/pytest -q tests/test_call_page_browser.py

clean:
	rm -rf $(VENV) build *.egg-info bench/out

include mk/lint.mk
include mk/proto.mk
include mk/infra.mk
include mk/attack.mk
include mk/fuzz.mk
include mk/faults.mk
