//! OpenAI-compatible clouds and servers as data (`kind = "openai"`, `preset = "…"`): where they
//! live, where their key comes from, which tier they belong to, and the quirks of their dialect.
//! A config value always wins over the preset's.

use crate::config::Tier;

/// One OpenAI-compatible upstream family.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiPreset {
    pub name: &'static str,
    pub base_url: &'static str,
    /// The environment variable the key is read from when the config gives none.
    pub api_key_env: Option<&'static str>,
    pub tier: Tier,
    pub quirks: Quirks,
}

/// How an upstream's dialect differs from OpenAI's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Request fields it refuses; they are left out.
    pub drop_fields: &'static [&'static str],
    /// It takes the output cap as `max_tokens` only (`max_completion_tokens` is renamed).
    pub max_tokens_only: bool,
    /// It refuses `stream_options` (so streamed usage is not asked for).
    pub no_stream_options: bool,
}

const NONE: Quirks = Quirks {
    drop_fields: &[],
    max_tokens_only: false,
    no_stream_options: false,
};

pub const PRESETS: &[OpenAiPreset] = &[
    OpenAiPreset {
        name: "openai",
        base_url: "https://api.openai.com/v1",
        api_key_env: Some("OPENAI_API_KEY"),
        tier: Tier::Cloud,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        api_key_env: Some("GROQ_API_KEY"),
        tier: Tier::Cloud,
        // Documented as unsupported (a 400 when sent).
        quirks: Quirks {
            drop_fields: &["logprobs", "top_logprobs", "logit_bias"],
            ..NONE
        },
    },
    OpenAiPreset {
        name: "together",
        base_url: "https://api.together.xyz/v1",
        api_key_env: Some("TOGETHER_API_KEY"),
        tier: Tier::Cloud,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "fireworks",
        base_url: "https://api.fireworks.ai/inference/v1",
        api_key_env: Some("FIREWORKS_API_KEY"),
        tier: Tier::Cloud,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "deepseek",
        base_url: "https://api.deepseek.com/v1",
        api_key_env: Some("DEEPSEEK_API_KEY"),
        tier: Tier::Cloud,
        quirks: Quirks {
            max_tokens_only: true,
            drop_fields: &["logit_bias"],
            ..NONE
        },
    },
    OpenAiPreset {
        name: "xai",
        base_url: "https://api.x.ai/v1",
        api_key_env: Some("XAI_API_KEY"),
        tier: Tier::Cloud,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        api_key_env: Some("MISTRAL_API_KEY"),
        tier: Tier::Cloud,
        // Mistral validates strictly: OpenAI-only fields are a 422.
        quirks: Quirks {
            drop_fields: &[
                "logit_bias",
                "logprobs",
                "top_logprobs",
                "user",
                "store",
                "metadata",
                "service_tier",
                "seed",
            ],
            max_tokens_only: true,
            no_stream_options: true,
        },
    },
    OpenAiPreset {
        name: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        api_key_env: Some("OPENROUTER_API_KEY"),
        tier: Tier::Cloud,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "vllm",
        base_url: "http://127.0.0.1:8000/v1",
        api_key_env: Some("VLLM_API_KEY"),
        tier: Tier::Local,
        quirks: NONE,
    },
    OpenAiPreset {
        name: "llamacpp",
        base_url: "http://127.0.0.1:8080/v1",
        api_key_env: Some("LLAMA_API_KEY"),
        tier: Tier::Local,
        quirks: Quirks {
            max_tokens_only: true,
            ..NONE
        },
    },
    OpenAiPreset {
        name: "ollama",
        base_url: "http://127.0.0.1:11434/v1",
        api_key_env: None,
        tier: Tier::Local,
        quirks: Quirks {
            max_tokens_only: true,
            ..NONE
        },
    },
];

pub fn find(name: &str) -> Option<&'static OpenAiPreset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset names, for messages.
pub fn names() -> String {
    PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

impl Quirks {
    /// Rewrites a request body for this upstream.
    pub fn apply(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        for f in self.drop_fields {
            body.remove(*f);
        }
        if self.max_tokens_only
            && let Some(v) = body.remove("max_completion_tokens")
        {
            body.entry("max_tokens").or_insert(v);
        }
        if self.no_stream_options {
            body.remove("stream_options");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quirks_rewrite_the_body() {
        let mut b = json!({"model": "m", "max_completion_tokens": 5, "logit_bias": {}, "stream_options": {"include_usage": true}})
            .as_object()
            .cloned()
            .unwrap();
        find("mistral").unwrap().quirks.apply(&mut b);
        assert_eq!(b, *json!({"model": "m", "max_tokens": 5}).as_object().unwrap());
        assert!(find("nope").is_none());
        assert!(names().contains("ollama"));
    }
}
