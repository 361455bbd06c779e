#![no_main]
//! Bytes → JSON object → Anthropic validation → typed request → canonical → Anthropic (and OpenAI).
//!
//! Oracles: a valid request translated through canonical and back is still valid (unless nothing was
//! left to send), and translating it a second time changes nothing.

use libfuzzer_sys::fuzz_target;
use protocol::anthropic::{MessagesRequest, from_object, parse_object, validate};
use protocol::openai::chat::ChatCompletionRequest;

fn round(req: MessagesRequest) -> Option<serde_json::Value> {
    let canon = req.to_canonical().ok()?;
    let _ = ChatCompletionRequest::from_canonical(&canon);
    let (back, _warnings) = MessagesRequest::from_canonical(&canon).ok()?;
    serde_json::to_value(back).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_object(data) else { return };
    if validate::messages_request(&body).is_err() {
        return;
    }
    let Ok(req) = from_object::<MessagesRequest>(body) else { return };
    let Some(once) = round(req) else { panic!("a valid request failed to translate") };
    let Some(obj) = once.as_object() else { panic!("not an object") };
    if obj.get("messages").and_then(|m| m.as_array()).is_some_and(|m| !m.is_empty()) {
        if let Err(e) = validate::messages_request(obj) {
            panic!("translation made a valid request invalid: {e:?}\n{once}");
        }
    }
    let Ok(again) = serde_json::from_value::<MessagesRequest>(once.clone()) else { panic!("output does not parse") };
    let Some(twice) = round(again) else { panic!("second translation failed") };
    assert_eq!(once, twice, "translation is not stable");
});
