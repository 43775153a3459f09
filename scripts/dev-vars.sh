#!/usr/bin/env bash
# Sourced: creates each worker's .dev.vars (git-ignored) from its .dev.vars.example when missing.
ensure_dev_vars() {
  local example target
  for example in "$BATON_ROOT/.dev.vars.example" "$BATON_ROOT"/crates/*/.dev.vars.example; do
    target="${example%.example}"
    [ -f "$target" ] || cp "$example" "$target"
  done
}
