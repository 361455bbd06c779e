//! The Switchyard gateway: the library that is the product. The binary only wires it up.

pub mod auth;
pub mod config;
pub mod error;
mod hangup;
pub mod http;
mod json_out;
pub mod keys;
pub mod limits;
pub mod providers;
pub mod redis_state;
pub mod router;
pub mod server;
pub mod store;
pub mod stored;
pub mod telemetry;
pub mod usage;

pub use config::Config;
pub use error::{Error, ErrorKind};
