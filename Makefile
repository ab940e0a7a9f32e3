# Community Chat.  Every target makes .venv and installs what it needs itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.run-deps
TEST_STAMP := $(VENV)/.test-deps
DEBIAN_PACKAGES := chromium nftables iproute2 busybox mosquitto

.PHONY: run test lint bench bench-router bench-readme clean debian-packages mesh catalogues

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(TEST_STAMP): requirements.txt requirements-test.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-test.txt
	touch $@ $(RUN_STAMP)

# Debian packages the tests drive (a real browser, network namespaces, nft, an
# MQTT broker the bridge tests start themselves: never the system service).
# Installed only when running as root; tests that need them fail in CI.
debian-packages:
	@if [ "$$(id -u)" = 0 ] && ! { [ -x /usr/bin/chromium ] && command -v nft >/dev/null \
	    && command -v ip >/dev/null && command -v busybox >/dev/null \
	    && [ -x /usr/sbin/mosquitto ]; }; then \
	  echo "installing Debian packages: $(DEBIAN_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(DEBIAN_PACKAGES) >/dev/null; \
	fi

## run: one router on http://127.0.0.1:8080 with data in ./data
run: $(RUN_STAMP)
	$(PY) -m app --data-dir data --port 8080

## mesh: three routers on loopback (http://127.0.0.1:8081 ... 8083), data in ./data/mesh-N
mesh: $(RUN_STAMP)
	@echo "routers on http://127.0.0.1:8081, :8082, :8083 (Ctrl-C stops all three)"
	@trap 'kill 0' INT TERM; \
	for i in 1 2 3; do \
	  $(PY) -m app --data-dir data/mesh-$$i --port 808$$i --node-name router-$$i \
	    --mesh-key-file data/mesh.key & \
	done; wait

## test: lint, then the whole suite (unit, integration, browser, netns)
test: $(TEST_STAMP) debian-packages lint
	$(PY) -m pytest

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/mypy --strict node
	$(VENV)/bin/mypy app
	$(VENV)/bin/shellcheck .ci/run

## bench: benchmarks with baselines side by side (tests/bench); figures in
## tests/bench/results.json and results.md
bench: $(TEST_STAMP) debian-packages
	rm -f tests/bench/results.json
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	$(PY) tests/bench/report.py

## bench-router: the chat in router-class cgroups (CPU quota, memory limit) beside
## full speed; needs root; figures in tests/bench/router-results.json and .md
bench-router: $(TEST_STAMP)
	rm -f tests/bench/router-results.json
	$(PY) tests/bench/router_bench.py
	$(PY) tests/bench/report.py

## catalogues: the translation catalogues made again from the sources: msgids
## into locale/chat.pot, merged into each locale/<lang>/LC_MESSAGES/chat.po,
## compiled to chat.mo (tests/catalogues.py, Babel); commit all three
catalogues: $(TEST_STAMP)
	$(PY) tests/catalogues.py

## bench-readme: README's benchmark tables rewritten from the two results files
bench-readme:
	$(PYTHON) tests/bench/report.py --readme

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build stage
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

## openwrt-stage: the OpenWrt package's files under DESTDIR (default ./stage), as
## the recipe installs them (both run openwrt/stage.sh); `make openwrt` is the same
DESTDIR ?= stage
.PHONY: openwrt-stage openwrt
openwrt-stage:
	@test -n "$(DESTDIR)" || { echo "DESTDIR is empty" >&2; exit 2; }
	rm -rf "$(DESTDIR)/usr/lib/community-chat"
	sh openwrt/stage.sh "$(CURDIR)" "$(DESTDIR)"

openwrt: openwrt-stage
