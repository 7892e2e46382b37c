# `make faults`: each fault of issue 11 (edge restart, etcd frozen, agent crash, transceiver crash, backbone loss) injected into
# a mesh of real processes on loopback during a call carrying speech both ways, then a burst of 200 offers at one
# edge (overload); prints a table and, as its last line, one JSON object. The backbone loss needs root (netns).
# `make faults FAULTS_ARGS=--quick` runs the short versions that tests/test_faults.py runs.
.PHONY: faults
faults: setup
	@scripts/apt-ensure etcd-server
	$(BIN)/python -m bench.faults $(FAULTS_ARGS)
# `make soak`: churning calls (20 at a time, each 30-60 s) through a mesh of real processes for 30 minutes, then
# RSS growth and what is left over (flows, sessions, claims, tasks, threads, file descriptors); outside CI. The
# last line is JSON. SOAK_ARGS="--duration-s 300" for 5 minutes; --quick is the 60 s version tests/test_faults.py runs.
.PHONY: soak
soak: setup
	@scripts/apt-ensure etcd-server
	$(BIN)/python -m bench.faults.soak $(SOAK_ARGS)
