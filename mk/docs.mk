# Documentation assets. Included by the top-level Makefile; never part of `make test`.

.PHONY: screenshots

screenshots: bootstrap ## README screenshots (Flower workers/tasks, landing page) from the running `make up` stack
	$(UV) run --frozen python docs/images/take_screenshots.py
