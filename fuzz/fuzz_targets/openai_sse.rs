#![no_main]
//! Bytes → SSE → OpenAI chunks → canonical events → folded, and re-encoded as an Anthropic stream.

use libfuzzer_sys::fuzz_target;
use protocol::canonical::StreamAccumulator;
use protocol::openai::chat::{ChatCompletionChunk, ChunkDecoder, ChunkEncoder};

mod common;

fuzz_target!(|data: &[u8]| {
    let mut dec = ChunkDecoder::new();
    let mut events = Vec::new();
    for ev in common::sse_events(data) {
        if ev.data == "[DONE]" {
            break;
        }
        if let Ok(chunk) = serde_json::from_str::<ChatCompletionChunk>(&ev.data) {
            dec.decode(chunk, &mut events);
        }
    }
    let mut acc = StreamAccumulator::new();
    let mut enc = ChunkEncoder::new("m", true);
    let mut chunks = Vec::new();
    for e in &events {
        acc.push(e);
        enc.encode(e, &mut chunks);
    }
    let _ = acc.finish();
    common::check_anthropic_encoding(&events);
});
