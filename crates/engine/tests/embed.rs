//! all-MiniLM-L6-v2 on candle against sentence-transformers' reference values.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use engine::{EmbedInput, Embedder, EngineError};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let _g = common::serial();
    let e = Embedder::load(&common::minilm()).unwrap();
    assert_eq!(e.dimensions(), 384);
    assert_eq!(e.max_tokens(), 512);

    let v = e.embed(&["This is an example sentence".into()]).unwrap();
    let v = &v[0];
    assert_eq!(v.len(), 384);
    for (got, want) in v.iter().zip([0.0677f32, 0.0635, 0.0487]) {
        assert!((got - want).abs() < 1e-3, "got {:?}", &v[..3]);
    }
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let pair = e
        .embed(&[
            "The new movie is awesome".into(),
            "The new movie is so great".into(),
        ])
        .unwrap();
    let c = cosine(&pair[0], &pair[1]);
    assert!((c - 0.894).abs() < 0.005, "cosine {c}");
}

#[test]
fn batching_matches_single_and_tokens_match_text() {
    let _g = common::serial();
    let e = Embedder::load(&common::minilm()).unwrap();
    let texts = [
        "short",
        "A considerably longer sentence, so that the batch needs padding for the others.",
        "Third one, medium length.",
    ];
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| (*t).into()).collect();
    let batch = e.embed(&inputs).unwrap();
    for (t, b) in texts.iter().zip(&batch) {
        let single = e.embed(&[(*t).into()]).unwrap();
        for (x, y) in single[0].iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{t}: {x} vs {y}");
        }
    }
    assert_eq!(e.count_tokens("This is an example sentence").unwrap(), 7);
    // Token ids (without [CLS]/[SEP]) give the same vector as the text.
    // "this is an example sentence" in the uncased WordPiece vocabulary:
    let ids = vec![2023, 2003, 2019, 2742, 6251];
    let from_ids = e.embed(&[EmbedInput::Tokens(ids)]).unwrap();
    let from_text = e.embed(&["This is an example sentence".into()]).unwrap();
    for (x, y) in from_ids[0].iter().zip(&from_text[0]) {
        assert!((x - y).abs() < 1e-5);
    }
    assert!(matches!(
        e.embed(&[EmbedInput::Tokens(vec![999_999])]),
        Err(EngineError::InvalidParam { .. })
    ));
}

#[test]
fn over_long_input_names_the_limit() {
    let _g = common::serial();
    let e = Embedder::load(&common::minilm()).unwrap();
    let long = "word ".repeat(600);
    match e.embed(&[long.into()]) {
        Err(err @ EngineError::PromptTooLong { limit: 512, .. }) => {
            assert!(err.to_string().contains("512"), "{err}");
        }
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    // 510 words + [CLS] + [SEP] = 512 fits.
    let ok = "word ".repeat(510);
    assert_eq!(e.count_tokens(&ok).unwrap(), 512);
    assert_eq!(e.embed(&[ok.into()]).unwrap()[0].len(), 384);
}

#[test]
fn missing_dir_is_named() {
    let err = Embedder::load(std::path::Path::new("/nonexistent/minilm")).unwrap_err();
    assert!(matches!(err, EngineError::ModelNotFound { .. }));
    assert!(err.to_string().contains("/nonexistent/minilm"));
}
