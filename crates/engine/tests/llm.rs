//! Generation against the real default models (SmolLM2-135M-Instruct, Gemma 3 270M).
#![allow(clippy::unwrap_used, clippy::panic, clippy::await_holding_lock)] // test helpers; the lock serialises tests on purpose

mod common;

use std::time::{Duration, Instant};

use engine::{
    EngineError, FinishReason, GenEvent, GenerateRequest, Generation, LlmModel, ModelConfig, Prompt,
    SamplingParams,
};
use serde_json::json;

fn smollm(parallel: u32, context: u32, queue: usize) -> LlmModel {
    let mut cfg = ModelConfig::new("smollm2", common::smollm());
    cfg.parallel = parallel;
    cfg.context_length = context;
    cfg.queue_capacity = queue;
    cfg.threads = 2;
    LlmModel::load(cfg).unwrap()
}

fn greedy(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut req = GenerateRequest::new(prompt);
    req.sampling.temperature = 0.0;
    req.max_tokens = Some(max_tokens);
    req
}

fn no_eog(model: &LlmModel, req: &mut GenerateRequest) {
    req.sampling.logit_bias = model.eog_tokens().into_iter().map(|t| (t, -1e9)).collect();
}

#[derive(Debug, Default, Clone)]
struct Choice {
    text: String,
    reason: Option<FinishReason>,
    completion_tokens: u32,
    cached_tokens: u32,
    first_at: Option<Instant>,
    finished_at: Option<Instant>,
    logprobs: Vec<engine::TokenLogprob>,
    deltas: Vec<String>,
}

async fn collect(mut g: Generation, n: usize) -> Vec<Choice> {
    let mut out = vec![Choice::default(); n];
    while let Some(ev) = g.next().await {
        match ev {
            GenEvent::Text {
                index,
                text,
                logprobs,
            } => {
                let c = &mut out[index as usize];
                c.first_at.get_or_insert_with(Instant::now);
                c.text.push_str(&text);
                c.deltas.push(text);
                c.logprobs.extend(logprobs);
            }
            GenEvent::Finished {
                index,
                reason,
                completion_tokens,
                cached_tokens,
            } => {
                let c = &mut out[index as usize];
                c.first_at.get_or_insert_with(Instant::now);
                c.reason = Some(reason);
                c.completion_tokens = completion_tokens;
                c.cached_tokens = cached_tokens;
                c.finished_at = Some(Instant::now());
            }
            GenEvent::Error(e) => panic!("generation failed: {e}"),
        }
    }
    out
}

fn user(text: &str) -> serde_json::Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn chatml_template_and_paris() {
    let _g = common::serial();
    let m = smollm(1, 1024, 4);
    let template = m.chat_template().expect("SmolLM2 ships a chat template");
    assert!(template.contains("<|im_start|>"), "{template}");
    // Without a system message the template adds its own default one.
    let prompt = m
        .render_chat(&user("What is the capital of France?"), None, true)
        .unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    assert!(
        prompt.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    // (With that default system prompt this Q4_1 135M model answers greedily with French
    // trivia instead of Paris, in llama.cpp as here, so ask with a plain system message.)
    let messages = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"}
    ]);
    let prompt = m.render_chat(&messages, None, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    // The markers are single special tokens.
    let toks = m.tokenize("<|im_start|>", false).unwrap();
    assert_eq!(toks.len(), 1);

    let mut req = greedy(Prompt::Text(prompt), 32);
    req.add_special = false;
    let g = m.generate(req).unwrap();
    assert!(g.prompt_tokens > 10);
    let out = collect(g, 1).await;
    assert!(out[0].text.contains("Paris"), "{:?}", out[0].text);
    assert!(out[0].reason.is_some());
    // Tool definitions reach the template without breaking it.
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    m.render_chat(&user("hi"), Some(&tools), true).unwrap();
}

#[tokio::test]
async fn seeded_sampling_repeats_and_n_choices_are_independent() {
    let _g = common::serial();
    let m = smollm(4, 512, 8);
    let make = || {
        let mut req = GenerateRequest::new(Prompt::Text("Once upon a time".into()));
        req.sampling = SamplingParams {
            temperature: 1.0,
            top_p: 0.95,
            top_k: 50,
            seed: Some(1234),
            ..SamplingParams::default()
        };
        req.max_tokens = Some(24);
        req.n = 3;
        req
    };
    let a = collect(m.generate(make()).unwrap(), 3).await;
    let b = collect(m.generate(make()).unwrap(), 3).await;
    for i in 0..3 {
        assert_eq!(a[i].text, b[i].text, "choice {i}");
        assert!(!a[i].text.is_empty());
    }
    assert!(
        a[0].text != a[1].text || a[1].text != a[2].text,
        "three sampled choices came out identical: {:?}",
        a[0].text
    );
    // Greedy choices are all the same.
    let mut req = greedy(Prompt::Text("The sky is".into()), 12);
    req.n = 2;
    let g = collect(m.generate(req).unwrap(), 2).await;
    assert_eq!(g[0].text, g[1].text);
}

#[tokio::test]
async fn stop_strings_end_output_and_are_never_emitted() {
    let _g = common::serial();
    let m = smollm(1, 512, 4);
    let prompt = Prompt::Text("List the days of the week: Monday, Tuesday,".into());
    let mut req = greedy(prompt.clone(), 40);
    no_eog(&m, &mut req);
    let full = collect(m.generate(req.clone()).unwrap(), 1).await.remove(0);
    assert_eq!(full.completion_tokens, 40);
    // A stop string from the middle of the greedy output (likely spanning tokens).
    let text = full.text.clone();
    let mid = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |c| c.0);
    let stop: String = text[mid..].chars().take(4).collect();
    assert_eq!(stop.chars().count(), 4, "output too short: {text:?}");
    let cut = text.find(&stop).unwrap();
    req.stop = vec![stop.clone(), "never-appears-xyz".into()];
    let stopped = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(stopped.reason, Some(FinishReason::Stop));
    assert_eq!(stopped.text, text[..cut], "stop {stop:?}");
    assert!(!stopped.text.contains(&stop));
    assert!(stopped.completion_tokens < 40);
}

#[tokio::test]
async fn max_tokens_gives_length_with_exact_count_and_logprobs() {
    let _g = common::serial();
    let m = smollm(1, 512, 4);
    let mut req = greedy(Prompt::Text("Hello".into()), 7);
    no_eog(&m, &mut req);
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(out.reason, Some(FinishReason::Length));
    assert_eq!(out.completion_tokens, 7);

    // Logprobs: one entry per token, greedy picks the top alternative, values are log-probs.
    let mut req = greedy(Prompt::Text("The capital of France is".into()), 6);
    no_eog(&m, &mut req);
    req.sampling.logit_bias.clear();
    req.logprobs = Some(3);
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(out.logprobs.len() as u32, out.completion_tokens);
    for lp in &out.logprobs {
        assert_eq!(lp.top_logprobs.len(), 3);
        assert!(lp.logprob <= 0.0);
        if !m.is_eog(lp.id) {
            assert_eq!(lp.top_logprobs[0].id, lp.id);
            assert!((lp.top_logprobs[0].logprob - lp.logprob).abs() < 1e-5);
        }
        let mass: f32 = lp.top_logprobs.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0001);
        assert!(lp.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }
    // Multi-byte characters split across byte-level BPE tokens come out whole: the deltas hold
    // exactly the bytes of the generated tokens, never a replacement character.
    let mut req = greedy(Prompt::Text("Emoji list: 😀 😁 😂 🤣 😃 😄 😅 😆".into()), 24);
    no_eog(&m, &mut req);
    req.logprobs = Some(0);
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    let bytes: Vec<u8> = out.logprobs.iter().flat_map(|lp| lp.bytes.clone()).collect();
    // (A character cut off by max_tokens ends the text as U+FFFD.)
    assert_eq!(String::from_utf8_lossy(&bytes), out.text);
    let (last, whole) = out.deltas.split_last().unwrap();
    assert!(whole.iter().all(|d| !d.contains('\u{FFFD}')), "{:?}", out.deltas);
    assert!(!last.trim_end_matches('\u{FFFD}').contains('\u{FFFD}'));
    let split = out
        .logprobs
        .iter()
        .any(|lp| std::str::from_utf8(&lp.bytes).is_err());
    assert!(split, "expected some emoji split across tokens: {:?}", out.text);
    assert!(out.deltas.iter().all(|d| !d.is_empty()));
    // Echo puts the prompt first.
    let mut req = greedy(Prompt::Text("Echo me".into()), 2);
    req.echo = true;
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(out.deltas[0], "Echo me");
    assert_eq!(out.completion_tokens, 2);
    // max_tokens 0 with echo: just the prompt back, finish Length, nothing generated.
    let mut req = greedy(Prompt::Text("Only the prompt".into()), 0);
    req.echo = true;
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(out.text, "Only the prompt");
    assert_eq!(out.reason, Some(FinishReason::Length));
    assert_eq!(out.completion_tokens, 0);
}

#[tokio::test]
async fn continuous_batching_starts_new_requests_mid_generation() {
    let _g = common::serial();
    let m = smollm(8, 512, 16);
    let req = |i: usize| {
        let mut r = greedy(Prompt::Text(format!("Story {i}: The old lighthouse keeper")), 48);
        no_eog(&m, &mut r);
        r
    };
    let mut first = m.generate(req(0)).unwrap();
    // Wait until the first request is generating.
    let mut first_text = String::new();
    match first.next().await {
        Some(GenEvent::Text { text, .. }) => first_text.push_str(&text),
        other => panic!("{other:?}"),
    }
    let handles: Vec<_> = (1..8)
        .map(|i| tokio::spawn(collect(m.generate(req(i)).unwrap(), 1)))
        .collect();
    let first_done = tokio::spawn(async move {
        let mut rest = collect(first, 1).await.remove(0);
        rest.text.insert_str(0, &first_text);
        rest
    });
    let mut others = Vec::new();
    for h in handles {
        others.push(h.await.unwrap().remove(0));
    }
    let first = first_done.await.unwrap();
    assert_eq!(first.completion_tokens, 48);
    let first_finished = first.finished_at.unwrap();
    for (i, o) in others.iter().enumerate() {
        assert_eq!(o.completion_tokens, 48, "stream {}", i + 1);
        assert_eq!(o.reason, Some(FinishReason::Length));
    }
    let last_started = others[6].first_at.unwrap();
    assert!(
        last_started < first_finished,
        "the 8th request only started after the 1st finished"
    );
    // The scheduler frees the slots right after the last events.
    let t = Instant::now();
    while m.stats().active != 0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.stats().active, 0);
}

#[tokio::test]
async fn dropping_a_generation_frees_its_slot_and_queue_is_bounded() {
    let _g = common::serial();
    let m = smollm(1, 1024, 1);
    let mut long = greedy(Prompt::Text("Write a very long essay about rivers.".into()), 900);
    no_eog(&m, &mut long);
    let mut a = m.generate(long.clone()).unwrap();
    assert!(matches!(a.next().await, Some(GenEvent::Text { .. })));
    // The slot is busy: one request fits in the queue, the next is refused.
    let b = m.generate(greedy(Prompt::Text("Hi".into()), 3)).unwrap();
    let c = m.generate(greedy(Prompt::Text("Hi".into()), 3));
    assert!(matches!(c, Err(EngineError::QueueFull)), "{c:?}");
    assert_eq!(m.stats().rejected, 1);
    // A queued request whose client went away gives its place back at once.
    drop(b);
    let b = m.generate(greedy(Prompt::Text("Hi".into()), 3)).unwrap();
    assert_eq!(m.stats().queued, 1);
    // Drop the long one: the queued request must start right away, not after 900 tokens. Counted in
    // tokens, not timed: the dropped generation may run a step or two before the scheduler sees it gone,
    // never the hundreds left of its 900 (a timed bound flaked on a loaded CI machine).
    let before = m.stats().generated_tokens;
    drop(a);
    let out = collect(b, 1).await.remove(0);
    assert_eq!(out.completion_tokens, 3);
    let spent = m.stats().generated_tokens - before;
    assert!(
        spent < 3 + 32,
        "{spent} tokens were generated between the drop and the queued request's end"
    );
}

#[tokio::test]
async fn prefix_cache_reuses_kv() {
    // What the cache saves in time is measured by `switchyard bench`; here the counters show the
    // prefix is not evaluated again (a timed assertion would flake on a loaded machine).
    let _g = common::serial();
    let m = smollm(2, 2048, 4);
    let prefix =
        "You are a helpful assistant. Here is a long document about the history of bridges. ".repeat(40);
    let ask = |q: &str| {
        let mut r = greedy(Prompt::Text(format!("{prefix}\nQuestion: {q}\nAnswer:")), 1);
        r.add_special = true;
        r
    };
    let before = m.stats();
    let cold = collect(m.generate(ask("Who built the first bridge?")).unwrap(), 1)
        .await
        .remove(0);
    let mid = m.stats();
    let warm = collect(m.generate(ask("What is a suspension bridge?")).unwrap(), 1)
        .await
        .remove(0);
    let after = m.stats();
    let cold_prefill = mid.prefill_tokens - before.prefill_tokens;
    let warm_prefill = after.prefill_tokens - mid.prefill_tokens;
    assert!(cold_prefill > 600, "{cold_prefill}");
    assert!(warm_prefill < 30, "prefilled {warm_prefill} tokens again");
    assert!(warm.cached_tokens as u64 > cold_prefill - 30);
    assert_eq!(cold.cached_tokens, 0);
    // The identical prompt again: everything but the last token comes from the cache.
    let again = collect(m.generate(ask("What is a suspension bridge?")).unwrap(), 1)
        .await
        .remove(0);
    assert_eq!(
        again.cached_tokens as u64,
        warm_prefill + warm.cached_tokens as u64 - 1
    );
}

#[tokio::test]
async fn prompt_too_long_and_bad_params() {
    let _g = common::serial();
    let m = smollm(1, 256, 4);
    assert_eq!(m.context_length(), 256);
    let long = "word ".repeat(300);
    match m.generate(greedy(Prompt::Text(long), 10)) {
        Err(EngineError::PromptTooLong { tokens, limit }) => {
            assert_eq!(limit, 256);
            assert!(tokens > 256);
        }
        other => panic!("{other:?}"),
    }
    let prompt = m.tokenize(&"word ".repeat(200), false).unwrap();
    let n = prompt.len() as u32;
    match m.generate(greedy(Prompt::Tokens(prompt.clone()), 100)) {
        Err(EngineError::PromptTooLong { tokens, limit }) => assert_eq!((tokens, limit), (n + 100, 256)),
        other => panic!("{other:?}"),
    }
    // Without max_tokens the completion may use the rest of the window, and ends with Length.
    let mut req = greedy(Prompt::Tokens(prompt), 0);
    req.max_tokens = None;
    no_eog(&m, &mut req);
    let out = collect(m.generate(req).unwrap(), 1).await.remove(0);
    assert_eq!(out.reason, Some(FinishReason::Length));
    assert_eq!(out.completion_tokens, 256 - n);

    let mut bad = greedy(Prompt::Text("x".into()), 5);
    bad.n = 9;
    assert!(matches!(m.generate(bad), Err(EngineError::InvalidParam { .. })));
    let mut bad = greedy(Prompt::Text("x".into()), 5);
    bad.sampling.top_p = 0.0;
    assert!(matches!(m.generate(bad), Err(EngineError::InvalidParam { .. })));
    let bad = greedy(Prompt::Tokens(vec![-1]), 5);
    assert!(matches!(m.generate(bad), Err(EngineError::InvalidParam { .. })));
}

#[test]
fn missing_or_invalid_model_files_are_named() {
    let err = LlmModel::load(ModelConfig::new("x", "/nonexistent/dir/model.gguf")).unwrap_err();
    assert!(matches!(err, EngineError::ModelNotFound { .. }));
    assert!(err.to_string().contains("/nonexistent/dir/model.gguf"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    std::fs::write(&path, b"this is not a gguf file").unwrap();
    let err = LlmModel::load(ModelConfig::new("x", &path)).unwrap_err();
    assert!(matches!(err, EngineError::InvalidModel { .. }), "{err}");
    assert!(err.to_string().contains("garbage.gguf"), "{err}");
}

#[tokio::test]
async fn gemma_loads_and_completes() {
    let _g = common::serial();
    let mut cfg = ModelConfig::new("gemma3", common::gemma());
    cfg.parallel = 2;
    cfg.context_length = 512;
    cfg.threads = 2;
    let m = LlmModel::load(cfg).unwrap();
    assert!(m.n_vocab() > 200_000);
    let prompt = "Question: What is the capital of France?\nAnswer:";
    let out = collect(m.generate(greedy(Prompt::Text(prompt.into()), 4)).unwrap(), 1)
        .await
        .remove(0);
    assert!(out.text.starts_with(" Paris"), "{:?}", out.text);
    // A base model: no chat template in the GGUF, so it serves completions only.
    assert!(m.chat_template().is_none());
    assert!(matches!(
        m.render_chat(&user("hi"), None, true),
        Err(EngineError::NoChatTemplate)
    ));
}
