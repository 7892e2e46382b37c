# Offline checks of the Terraform deploy (infra/terraform): terraform fmt -check, validate and terraform test (a mocked
# AWS provider, from the hashicorp/aws provider mirror when the machine has one; skipped with the reason otherwise),
# the deploy's agreement with infra/topology.json and the voicemesh CLI, and the static checks of every rendered host
# (unit variables, systemd-analyze verify, cloud-init schema, checkov, IAM against each script's AWS calls). All in
# tests/test_deploy.py, tests/test_deploy_operations.py, tests/test_terraform.py and tests/test_infra_checks.py, so `make test` runs them too.
# checkov lives in its own venv (.venv-checkov): its pinned dependencies are not the project's.
CHECKOV_VERSION := 3.3.30
.PHONY: infra-check deploy-rehearsal checkov
infra-check: setup apt-test checkov
	$(BIN)/pytest -q -rs tests/test_deploy.py tests/test_deploy_operations.py tests/test_terraform.py tests/test_infra_checks.py

checkov: $(VENV)-checkov/.installed
$(VENV)-checkov/.installed: | apt-base
	$(PYTHON) -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

# `make deploy-rehearsal`: every host of the two-region topology fixture rendered by Terraform, booted as network
# namespaces running the units' own commands (tools/rehearsal, README there); a table and, last, one JSON line.
deploy-rehearsal: setup apt-test
	$(BIN)/pytest -q tests/test_deploy_rehearsal.py
