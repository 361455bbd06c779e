//! Wire types of every dialect, the canonical model they translate through, and the SSE codec.
//!
//! Pure data and pure functions: no I/O, so every translator can be tested (and fuzzed) without a socket.

pub mod anthropic;
pub mod canonical;
pub mod error;
pub mod openai;
pub mod raw;
pub mod sse;

pub use error::WireError;
