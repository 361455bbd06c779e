#![no_main]
//! Bytes → JSON object → OpenAI validation → typed request → canonical → OpenAI and Anthropic again.

use libfuzzer_sys::fuzz_target;
use protocol::anthropic::MessagesRequest;
use protocol::openai::chat::ChatCompletionRequest;
use protocol::openai::{from_object, parse_object, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_object(data) else { return };
    if validate::chat_request(&body).is_err() {
        return;
    }
    let Ok(req) = from_object::<ChatCompletionRequest>(body) else { return };
    let Ok(canon) = req.to_canonical() else { return };
    let (back, _warnings) = ChatCompletionRequest::from_canonical(&canon);
    let _ = serde_json::to_vec(&back);
    if let Ok((anthropic, _warnings)) = MessagesRequest::from_canonical(&canon) {
        let _ = serde_json::to_vec(&anthropic);
    }
});
