# `make attack`: each attack on the public surface (issue 9) against a mesh of real processes on loopback
# (etcd, transceivers, edges, the geo DNS server); prints a table and, as its last line, one JSON object.
# `make attack ATTACK_ARGS=--quick` runs the short versions that tests/test_attack.py runs (about a minute).
.PHONY: attack
attack: setup
	@scripts/apt-ensure etcd-server
	$(BIN)/python -m bench.attack $(ATTACK_ARGS)
