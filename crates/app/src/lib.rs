//! memlayer's application layer.
//!
//! [`build`] turns a [`Config`] into [`Services`]: the adapters chosen by the
//! configuration, wired behind `Arc<dyn Port>`, and the [`MemoryService`] that
//! every frontend (HTTP server, CLI, an embedding program) calls.
//!
//! Invariants:
//! - this is the only crate that names adapter crates; the backend is chosen
//!   in one place, [`build`];
//! - no HTTP or JSON wire shapes here: those belong to `memlayer-api`;
//! - the memory service validates use-case rules (a model for token counting,
//!   tenant scoping) and delegates storage rules to the ports.

mod config;
mod memory;
mod wiring;

pub use config::{Config, ConfigError, DatabaseConfig, LogConfig, MemoryConfig, Secret, ServerConfig};
pub use memory::{AppendOptions, MemoryService};
pub use wiring::{BuildError, Services, build, open_database};

pub use memlayer_ports::StoreError;
