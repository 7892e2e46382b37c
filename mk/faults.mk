# `make faults`: each fault of issue 11 (edge restart, etcd frozen, agent crash, transceiver crash) injected into
# a mesh of real processes on loopback during a call carrying speech both ways; prints a table and, as its last
# line, one JSON object. `make faults FAULTS_ARGS=--quick` runs the short versions that tests/test_faults.py runs.
.PHONY: faults
faults: setup
	@scripts/apt-ensure etcd-server
	$(BIN)/python -m bench.faults $(FAULTS_ARGS)
