# The README's two set-up commands: `make demo` and `make test`; `make docs` builds the documentation site.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# On a machine without an NVIDIA GPU, take PyTorch's CPU wheel instead of a multi-GB CUDA build,
# unless a CPU wheel is already on disk (pip's find-links) or the CPU index cannot be reached.
TORCH_INDEX ?= $(shell \
  if command -v nvidia-smi >/dev/null 2>&1; then :; \
  elif ls $${PIP_FIND_LINKS:-/nonexistent}/torch-*+cpu-*.whl >/dev/null 2>&1; then :; \
  elif curl -sfI -m 5 https://download.pytorch.org/whl/cpu/ >/dev/null 2>&1; then \
    echo --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple; fi)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install demo test docs clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(OFFLINE) $(BIN)/tailor quickstart

test: install
	$(OFFLINE) $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# --strict turns every warning into a failure: broken links and anchors, pages missing from the nav.
# The site lands in build/docs (gitignored); the configuration reference is generated from tailor.config.
docs: install
	$(OFFLINE) NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/docs

clean:
	rm -rf $(VENV) runs .pytest_cache build/docs
