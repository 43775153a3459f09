# The set-up commands. Each installs whatever is missing first.
.PHONY: dev test bench deploy

dev:  ## build everything and run the whole suite locally under one `wrangler dev`
	bash scripts/dev.sh

test: ## native tests, wasm32 builds, deploy dry runs, then e2e tests against a fresh local stack
	bash scripts/test.sh

bench: ## Baton vs Cloudflare Workflows on the local runtime; writes bench-results/latest.json (ARGS="--runs 50 ...")
	bash scripts/bench.sh $(ARGS)

deploy: ## deploy to Cloudflare: make deploy ENV=production|staging [ARGS=--with-samples]
	bash scripts/deploy.sh --env "$(ENV)" $(ARGS)
