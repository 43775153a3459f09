# The two set-up commands. Both install whatever is missing first.
.PHONY: dev test bench

dev:  ## build everything and run the whole suite locally under one `wrangler dev`
	bash scripts/dev.sh

test: ## native tests, wasm32 builds, then e2e tests against a fresh local stack
	bash scripts/test.sh
