//! The one error type of the engine. Each variant maps onto an HTTP status in the gateway.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
///
/// Suggested HTTP mapping for the gateway: `ModelNotFound` → 404 (or 500 at start-up), `InvalidModel`
/// → 500, `NoChatTemplate` / `Template` / `PromptTooLong` / `InvalidParam` → 400, `QueueFull` → 503 with
/// `Retry-After`, `Fetch` / `Checksum` / `Internal` → 500.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The model file or directory does not exist.
    #[error("model not found: {}", path.display())]
    ModelNotFound {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be loaded as a model.
    #[error("invalid model {}: {message}", path.display())]
    InvalidModel {
        /// The file that failed to load.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The model has no chat template in its metadata, so it can only serve completions.
    #[error("model has no chat template (it serves completions only)")]
    NoChatTemplate,
    /// The chat template failed to compile or render (includes `raise_exception` from the template).
    #[error("chat template error: {0}")]
    Template(String),
    /// Prompt plus the requested completion does not fit in the context window.
    #[error("prompt is too long: {tokens} tokens, the limit is {limit}")]
    PromptTooLong {
        /// Tokens needed (prompt, plus `max_tokens` when given).
        tokens: u32,
        /// The context window of one sequence (for embeddings: the maximum sequence length).
        limit: u32,
    },
    /// The bounded request queue in front of the scheduler is full: retry later.
    #[error("the model's request queue is full")]
    QueueFull,
    /// A request parameter is out of range.
    #[error("invalid parameter `{param}`: {message}")]
    InvalidParam {
        /// The parameter name as the API spells it.
        param: String,
        /// What is wrong with it.
        message: String,
    },
    /// A bug or an unexpected failure inside llama.cpp / candle.
    #[error("internal engine error: {0}")]
    Internal(String),
    /// Fetching a model source (pip, unzip, file I/O) failed.
    #[error("fetching model failed: {0}")]
    Fetch(String),
    /// An assembled / downloaded file does not have the expected SHA-256.
    #[error("checksum mismatch for {}: expected {expected}, got {actual}", path.display())]
    Checksum {
        /// The file that was checked.
        path: PathBuf,
        /// The expected hex digest.
        expected: String,
        /// The hex digest actually computed.
        actual: String,
    },
}

impl EngineError {
    pub(crate) fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidParam {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }
}
