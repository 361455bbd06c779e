//! Shared by the fuzz targets: feeding bytes to the SSE decoder in two pieces, and the Anthropic event
//! grammar every encoder output must follow.

use protocol::anthropic::{BlockDelta, EventEncoder, MessageStreamEvent};
use protocol::canonical::StreamEvent;
use protocol::sse::{SseDecoder, SseEvent};

/// Decodes `data` as SSE, split at a point chosen by its first byte (the split must not matter).
pub fn sse_events(data: &[u8]) -> Vec<SseEvent> {
    let split = match data.first() {
        Some(b) => (*b as usize * data.len()) / 256,
        None => 0,
    };
    let mut whole = Vec::new();
    let mut dec = SseDecoder::with_limits(1 << 16, 1 << 16);
    let ok_whole = dec.push(data, &mut whole).and_then(|()| dec.finish(&mut whole)).is_ok();
    let mut pieces = Vec::new();
    let mut dec = SseDecoder::with_limits(1 << 16, 1 << 16);
    let ok_split = dec
        .push(&data[..split], &mut pieces)
        .and_then(|()| dec.push(&data[split..], &mut pieces))
        .and_then(|()| dec.finish(&mut pieces))
        .is_ok();
    if ok_whole && ok_split {
        assert_eq!(whole, pieces, "SSE events depend on where the bytes were split");
    }
    whole
}

/// Encodes canonical events as an Anthropic stream and checks its grammar: one `message_start` first,
/// blocks one at a time with indices 0, 1, 2…, deltas only in the open block and of its kind,
/// `message_delta` then `message_stop` last.
pub fn check_anthropic_encoding(events: &[StreamEvent]) {
    let mut enc = EventEncoder::new("m");
    let mut out = Vec::new();
    for ev in events {
        enc.encode(ev, &mut out);
    }
    enc.finish(&mut out);
    let n = out.len();
    assert!(n >= 3, "{out:?}");
    assert!(matches!(out[0], MessageStreamEvent::MessageStart { .. }), "{out:?}");
    assert!(matches!(out[n - 2], MessageStreamEvent::MessageDelta { .. }), "{out:?}");
    assert!(matches!(out[n - 1], MessageStreamEvent::MessageStop), "{out:?}");
    let mut open: Option<(u32, String)> = None;
    let mut next = 0u32;
    for ev in &out[1..n - 2] {
        match ev {
            MessageStreamEvent::ContentBlockStart { index, content_block } => {
                assert!(open.is_none(), "nested block: {out:?}");
                assert_eq!(*index, next, "{out:?}");
                open = Some((*index, content_block.kind().to_string()));
                next += 1;
            }
            MessageStreamEvent::ContentBlockDelta { index, delta } => {
                let Some((i, kind)) = open.as_ref() else { panic!("delta outside a block: {out:?}") };
                assert_eq!(index, i, "{out:?}");
                let ok = match delta {
                    BlockDelta::TextDelta { text } => kind == "text" && !text.is_empty(),
                    BlockDelta::ThinkingDelta { .. } | BlockDelta::SignatureDelta { .. } => kind == "thinking",
                    BlockDelta::InputJsonDelta { partial_json } => kind == "tool_use" && !partial_json.is_empty(),
                    _ => false,
                };
                assert!(ok, "{delta:?} in a {kind} block: {out:?}");
            }
            MessageStreamEvent::ContentBlockStop { index } => {
                assert_eq!(open.take().map(|o| o.0), Some(*index), "{out:?}");
            }
            other => panic!("unexpected {other:?}: {out:?}"),
        }
    }
    assert!(open.is_none(), "{out:?}");
    for ev in &out {
        let _ = ev.to_frame();
    }
}
