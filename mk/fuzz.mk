# `make fuzz`: a long hypothesis campaign over the fuzz tests (tests/test_fuzz_*.py) under the "fuzz" profile,
# outside CI (the test suite runs them under "ci": few examples, fixed seed). Prints, per target, the examples run.
# FUZZ_EXAMPLES sets examples per target; failures found are kept in .hypothesis/ and replayed first next time.

FUZZ_EXAMPLES ?= 20000

.PHONY: fuzz

fuzz: setup
	VOICEMESH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz_*.py \
		--hypothesis-profile=fuzz --hypothesis-show-statistics
