# jikimi — the two sacred commands are `make demo` and `make test`; both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test check demo venv system-deps clean bench

# system-deps first: PyGObject and pycairo build against Debian's libgirepository and cairo headers.
$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Mosquitto (the broker), Chromium (console tests) and mbpoll (a third-party Modbus client)
# come from Debian's packages, and so does the simulated camera's RTSP server: GStreamer's RTSP
# server and the plugins its pipeline uses (appsrc/videoconvert in -base, rtph264pay in -good,
# x264enc in -ugly), the headers PyGObject builds against, and ffprobe (a third-party RTSP client).
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v mbpoll >/dev/null || missing="$$missing mbpoll"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	fc-list 2>/dev/null | grep -qi nanum || missing="$$missing fonts-nanum"; \
	for pkg in gir1.2-gst-rtsp-server-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base \
	           gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly libgirepository1.0-dev libcairo2-dev \
	           pkg-config gcc; do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	command -v ffprobe >/dev/null || missing="$$missing ffmpeg"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: $(STAMP) system-deps
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict

demo: $(STAMP) system-deps
	$(BIN)/jikimi demo

bench: $(STAMP) system-deps
	mkdir -p var/bench
	$(BIN)/jikimi bench edge --json var/bench/edge.json
	$(BIN)/jikimi bench ingest --json var/bench/ingest.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
