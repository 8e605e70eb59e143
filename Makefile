# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch can pull a CUDA build of several GB.
TORCH := torch==2.13.0
# TTS engines and English text for the corpus builder, from Debian; what KenLM's estimator builds with.
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	fortunes fortunes-min wordnet-base dict-gcide \
	cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev
# KenLM's lmplz and build_binary (the word n-gram LMs), built from the sources in the kenlm package on PyPI, the
# version of the query module setup.cfg installs: Debian has no kenlm package.
KENLM := kenlm==0.3.0

# The Hugging Face libraries that setup.cfg holds to the range the suite has passed on.
HF_PACKAGES := transformers datasets accelerate tokenizers
# their lower bounds in setup.cfg, as exact pins
OLDEST_PINS := $(shell sed -n 's/^ *\(transformers\|datasets\|accelerate\|tokenizers\)>=\([0-9.]*\),.*/\1==\2/p' setup.cfg)

.PHONY: install system-packages kenlm test test-latest test-oldest demo bench bench-full clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[test]"
	touch $@

install: $(VENV)/.installed

# apt-get needs root; without it, say what is missing (tests that need an engine skip and say why)
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "not root: cannot apt-get install" $$missing; fi; \
	fi

$(BIN)/lmplz: | $(BIN)/python system-packages
	rm -rf $(VENV)/kenlm-src && mkdir -p $(VENV)/kenlm-src
	$(BIN)/python -m pip download --quiet --no-deps --no-build-isolation --dest $(VENV)/kenlm-src $(KENLM)
	tar xzf $(VENV)/kenlm-src/kenlm-*.tar.gz -C $(VENV)/kenlm-src --strip-components 1
	(cmake -S $(VENV)/kenlm-src -B $(VENV)/kenlm-src/build -DCMAKE_BUILD_TYPE=Release && \
	 cmake --build $(VENV)/kenlm-src/build --target lmplz build_binary -j 2) >$(VENV)/kenlm-build.log 2>&1 || \
	 (tail -30 $(VENV)/kenlm-build.log; false)
	cp $(VENV)/kenlm-src/build/bin/lmplz $(VENV)/kenlm-src/build/bin/build_binary $(BIN)/
	rm -rf $(VENV)/kenlm-src

kenlm: $(BIN)/lmplz

test: install system-packages kenlm
	$(BIN)/python -m pytest

# The suite in a venv of its own against the newest releases of $(HF_PACKAGES), above setup.cfg's caps (not
# part of CI: run it to see the next break before users do), or against the oldest releases setup.cfg allows.
test-latest test-oldest: test-%: system-packages kenlm
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet $(TORCH) -e ".[test]" $(if $(filter oldest,$*),$(OLDEST_PINS))
	$(if $(filter latest,$*),.venv-$*/bin/python -m pip install --quiet --upgrade $(TORCH) $(HF_PACKAGES))
	@.venv-$*/bin/python -m pip list 2>/dev/null | grep -iE '^($(subst $() ,|,$(HF_PACKAGES))) '
	KENLM_BIN=$(abspath $(BIN)) .venv-$*/bin/python -m pytest

demo: install system-packages kenlm
	$(BIN)/python examples/demo.py --output_dir demo

# the pretrained references of bench/pretrained.py (Whisper tiny.en, PocketSphinx)
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[test,bench]"
	touch $@

# the whole benchmark suite, small (a sanity check, about 10 minutes) or full (the README's figures, hours)
bench: $(VENV)/.bench-installed system-packages kenlm
	$(BIN)/python bench/run.py --quick

bench-full: $(VENV)/.bench-installed system-packages kenlm
	$(BIN)/python bench/run.py --full

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest demo bench/work *.egg-info
