# `make fuzz`: a long hypothesis campaign over the fuzz tests (tests/test_fuzz_*.py) under the "fuzz" profile,
# outside CI (the test suite runs them under "ci": few examples, fixed seed). Ends with the examples run per
# target. FUZZ_EXAMPLES sets examples per target; failures found are kept in .hypothesis/ and replayed first.

FUZZ_EXAMPLES ?= 20000

.PHONY: fuzz

fuzz: setup
	@mkdir -p build
	@{ VOICEMESH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz_*.py --hypothesis-profile=fuzz \
		--hypothesis-show-statistics; echo $$? > build/fuzz.status; } 2>&1 | tee build/fuzz.log
	@awk '/^tests\/.*::.*:$$/ { name = substr($$1, 1, length($$1) - 1); if (!(name in run)) order[n++] = name; run[name] += 0 } \
		/ passing, .* failing, and .* invalid/ { run[name] += $$2 + $$4; failed[name] += $$4; invalid[name] += $$7 } \
		END { print "\nexamples run per target:"; \
		      for (i = 0; i < n; i++) printf "%8d  %s (%d failing, %d invalid)\n", run[order[i]], order[i], failed[order[i]], invalid[order[i]] }' \
		build/fuzz.log
	@exit $$(cat build/fuzz.status)
