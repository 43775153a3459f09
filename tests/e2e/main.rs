//! End-to-end tests against the whole suite under `wrangler dev` (one shared stack per
//! test binary; tests that need a stack of their own start one).

mod accounts;
mod api;
mod archive;
mod bad_input;
mod bulk;
mod children;
mod cli;
mod consumer;
mod cost;
mod deadlines;
mod foundation;
mod in_place;
mod llm;
mod logs;
mod maps;
mod metrics;
mod openapi;
mod otlp;
mod pause;
mod poller;
mod readme_example;
mod resilience;
mod runs;
mod schedules;
mod semantics;
mod shards;
mod trace;
mod trust;
mod ui;
mod waits;
mod webhooks;
