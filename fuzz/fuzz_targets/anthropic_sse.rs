#![no_main]
//! Bytes → SSE → Anthropic events → canonical events → folded, and re-encoded as an Anthropic stream.

use libfuzzer_sys::fuzz_target;
use protocol::anthropic::EventDecoder;
use protocol::canonical::StreamAccumulator;

mod common;

fuzz_target!(|data: &[u8]| {
    let mut dec = EventDecoder::new();
    let mut events = Vec::new();
    for ev in common::sse_events(data) {
        if let Err(e) = dec.decode(&ev, &mut events) {
            let _ = e.status();
            break;
        }
    }
    let _ = dec.is_finished();
    let mut acc = StreamAccumulator::new();
    for e in &events {
        acc.push(e);
    }
    let _ = acc.finish();
    common::check_anthropic_encoding(&events);
});
