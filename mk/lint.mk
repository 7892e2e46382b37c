# `make lint`: ruff, mypy (pyproject.toml [tool.mypy], run on the package as installed by tools/typecheck.py)
# and the import layers (tools/layers.py). `make test-fast`: the unit tier only (no sockets, no processes).
.PHONY: lint test-fast
lint: setup
	$(BIN)/ruff check .
	$(BIN)/python tools/typecheck.py
	$(BIN)/python tools/layers.py

test-fast: setup
	$(BIN)/pytest -q -m unit
