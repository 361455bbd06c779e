//! How fast `RawObject`'s scanner reads an upstream's answer and a streamed chunk, against serde_json
//! reading the same members (its `&RawValue` path, what the scanner replaced), in one process:
//!
//!     cargo run --release -p protocol --example raw_scan
//!
//! Prints nanoseconds a read for each and the ratio. Rounds alternate the two, so drift cancels.

use std::hint::black_box;
use std::time::Instant;

use protocol::raw::{members_by_serde_json, scan_object};

/// mock-upstream's answer to a chat request, as relayed in `bench/run.sh` (557 bytes).
const ANSWER: &str = r#"{"id":"chatcmpl-mock1","object":"chat.completion","created":1796399959,"model":"mock-ok","choices":[{"index":0,"message":{"role":"assistant","content":"echo: Say hello","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_mock"}"#;

/// One of its streamed chunks.
const CHUNK: &str = r#"{"id":"chatcmpl-mock1","object":"chat.completion.chunk","created":1796399959,"model":"mock-ok","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":{"content":"tok "},"logprobs":null,"finish_reason":null}]}"#;

fn ns_per_read(n: u32, read: impl Fn(&str) -> usize, text: &str) -> f64 {
    let start = Instant::now();
    let mut members = 0;
    for _ in 0..n {
        members += read(black_box(text));
    }
    black_box(members);
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let scan = |t: &str| scan_object(t).map_or(0, |m| m.len());
    let serde = |t: &str| members_by_serde_json(t).map_or(0, |m| m.len());
    for (name, text) in [("answer", ANSWER), ("chunk", CHUNK)] {
        assert_eq!(scan_object(text).ok(), members_by_serde_json(text), "{name}");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            ours.push(ns_per_read(200_000, scan, text));
            theirs.push(ns_per_read(200_000, serde, text));
        }
        ours.sort_by(f64::total_cmp);
        theirs.sort_by(f64::total_cmp);
        let (a, b) = (ours[2], theirs[2]);
        println!(
            "{name:<7} {:>4} bytes: scan {a:7.1} ns, serde_json {b:7.1} ns, {:.2}x (medians of 5 alternated rounds)",
            text.len(),
            b / a
        );
    }
}
