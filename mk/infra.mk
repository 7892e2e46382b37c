# Offline checks of the Terraform deploy (infra/terraform): terraform fmt -check, validate and
# terraform test (a mocked AWS provider, from the hashicorp/aws provider mirror when the machine
# has one; skipped with the reason otherwise), and the deploy's agreement with infra/topology.json
# and the voicemesh CLI. All in tests/test_deploy.py and tests/test_terraform.py, so `make test` runs them too.
.PHONY: infra-check
infra-check: setup
	$(BIN)/pytest -q -rs tests/test_deploy.py tests/test_deploy_operations.py tests/test_terraform.py
