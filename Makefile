# Two commands matter: `make serve` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
# One R per worker process: two use both cores of a small machine.
WORKERS ?= 2
MODEL := models/admission.rds
# Debian packages the product and its tests use (R, the sandbox, the browser, load tools),
# the venv (python3-venv; python3-dev: rpy2 compiles its API mode against Debian's Python)
# and the Lambda zip's build (debootstrap makes the Debian 11 root R is built in,
# patchelf gives libR.so its SONAME; see scripts/build_r.sh).
APT_PACKAGES := r-base-core bubblewrap chromium wrk r-cran-plumber r-cran-randomforest r-cran-data.table \
	r-cran-ranger r-cran-caret r-cran-recipes zip unzip binutils curl shellcheck gcc \
	python3 python3-venv python3-dev debootstrap patchelf

.PHONY: setup system venv model docs-ui serve test package bench reliability clean

setup: system venv model docs-ui

# apt-get only when something is missing, so a set-up machine needs no root.
# With recommends, as on the machine the suite was developed on (R's
# recommended packages, fonts for the browser's screenshots).
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo ">> apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

# A venv whose pip does not run (left half-made by a failed `python3 -m venv`)
# is made again; the stamp is written only once every install succeeded.
$(VENV)/.installed: requirements.txt
	@if ! $(PY) -m pip --version >/dev/null 2>&1; then \
		echo ">> python3 -m venv $(VENV)"; rm -rf $(VENV) && python3 -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

model: $(MODEL)

# Swagger UI for the docs page (web/docs/), from the npm registry at a pinned
# version (npm pack checks the registry's integrity hash); only the two files
# the page loads are kept, beside it, so the page ships as one folder.
SWAGGER_UI := swagger-ui-dist@5.35.0
SWAGGER_DIR := web/docs/vendor
docs-ui: $(SWAGGER_DIR)/.$(SWAGGER_UI)

$(SWAGGER_DIR)/.$(SWAGGER_UI):
	@# npm: Debian's package when the machine has no npm of its own
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	rm -rf build/npm && mkdir -p build/npm $(SWAGGER_DIR).tmp
	cd build/npm && npm pack --silent $(SWAGGER_UI) >/dev/null
	tar -xzf build/npm/swagger-ui-dist-*.tgz -C build/npm
	cp build/npm/package/swagger-ui-bundle.js build/npm/package/swagger-ui.css build/npm/package/LICENSE $(SWAGGER_DIR).tmp/
	touch $(SWAGGER_DIR).tmp/.$(SWAGGER_UI)
	rm -rf $(SWAGGER_DIR) && mv $(SWAGGER_DIR).tmp $(SWAGGER_DIR)

$(MODEL): models/train.R models/simulate.R
	Rscript models/train.R --out $(MODEL)

serve: setup
	MODEL_URI=$${MODEL_URI:-$(abspath $(MODEL))} $(PY) -m rlambda.local --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: setup
	$(PY) -m pytest -q tests
	cd $(CURDIR) && MODEL_URI=$${MODEL_URI:-$(abspath $(MODEL))} $(PY) test_handler.py

package: setup
	bash scripts/package.sh

# Each prints its figures (JSON), against its baseline where the issue names one, in the same run.
bench: setup
	$(PY) bench/bench_handler.py
	$(PY) bench/bench_coldstart.py
	$(PY) bench/bench_http.py
	$(PY) bench/bench_package.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_check.py
	$(PY) bench/bench_openapi.py
	$(PY) bench/bench_page.py

# Bad input, faults, fuzzing and a soak run; rewrites RELIABILITY.md (about 4 minutes).
reliability: setup
	$(PY) scripts/reliability.py

clean:
	rm -rf build test-artifacts .pytest_cache
