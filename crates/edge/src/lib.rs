//! baton-edge: the one place that talks to Cloudflare bindings.
//!
//! Every worker parses its input, calls `baton-core` for decisions and uses this crate to
//! persist and act. Invariants: SQL lives only in [`d1`]; binding names live only in
//! [`bindings`]; errors become HTTP responses only in [`error::Error::to_response`].

pub mod archive;
pub mod auth;
pub mod bindings;
pub mod clock;
pub mod concurrency;
pub mod d1;
pub mod dead_letters;
pub mod engine;
pub mod error;
pub mod faults;
pub mod health;
pub mod http;
pub mod kam;
pub mod kv;
pub mod llm;
pub mod log;
pub mod meter;
pub mod otlp;
pub mod protocol;
pub mod queues;
pub mod rate_limit;
pub mod services;
pub mod settings;
pub mod test_hooks;

pub use error::{Error, Result};
