# Backend Arena: `make run` sets up .venv and serves the app on http://127.0.0.1:7860;
# `make test` sets up the test tools and runs the whole suite.
.PHONY: run test setup setup-dev lint bench space-check screenshots docs

run: setup
	.venv/bin/python app.py

test: setup-dev
	.venv/bin/python -m pytest

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

lint: setup-dev
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python benchmarks/text_latency.py
	.venv/bin/python benchmarks/image_latency.py --markdown docs/BENCHMARKS.md

# Replays a Hugging Face Space's build of requirements.txt in a fresh venv and calls the app (docs/space-build.md).
space-check:
	bash scripts/space_check.sh

# The README's and docs' screenshots: the browser tests, writing their pictures into docs/screenshots (a plain
# `make test` writes them to a temporary folder and leaves the checkout as it was).
screenshots: setup-dev
	ARENA_SCREENSHOTS=$(CURDIR)/docs/screenshots .venv/bin/python -m pytest tests/test_browser.py tests/test_browser_ui.py tests/test_demos.py

# The generated pages: the verdict corpus's figures (a plain `make test` checks them, never writes them).
docs: setup-dev
	ARENA_WRITE_DOCS=1 .venv/bin/python -m pytest tests/test_verdicts.py -k corpus_precision_and_recall
