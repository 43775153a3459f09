# The two set-up commands. Both install whatever is missing first.
.PHONY: dev test bench

dev:  ## build everything and run the whole suite locally under one `wrangler dev`
	bash scripts/dev.sh

test: ## native tests, wasm32 builds, then e2e tests against a fresh local stack
	bash scripts/test.sh

bench: ## Baton vs Cloudflare Workflows on the local runtime; writes bench-results/latest.json (ARGS="--runs 50 ...")
	bash scripts/bench.sh $(ARGS)
