//! Prices (USD per 1M tokens) and what a request costs. An embedded table covers the common cloud
//! models; a deployment's `price` in config overrides it; local models cost nothing.

use protocol::canonical::Usage;

use crate::config::PriceConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

impl Price {
    pub const FREE: Price = Price {
        input: 0.0,
        output: 0.0,
        cached_input: 0.0,
    };

    pub fn from_config(p: &PriceConfig) -> Price {
        Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input.unwrap_or(p.input),
        }
    }

    /// What this usage cost, in USD. Cached prompt tokens (a part of the input) are billed at their own
    /// rate; cache writes (also a part of the input) at the input rate.
    pub fn cost(&self, u: &Usage) -> f64 {
        let cached = u.cache_read_tokens.min(u.input_tokens);
        let fresh = u.input_tokens - cached;
        (fresh as f64 * self.input + cached as f64 * self.cached_input + u.output_tokens as f64 * self.output)
            / 1_000_000.0
    }

    /// The expected cost of a request: its estimated prompt and expected output.
    pub fn expected(&self, prompt_tokens: u64, output_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1_000_000.0
    }

    /// One figure per 1M tokens, three input tokens to one output token (the usual blend).
    pub fn blended(&self) -> f64 {
        (3.0 * self.input + self.output) / 4.0
    }
}

/// (model name prefix, input, output, cached input). The longest matching prefix wins, so dated
/// snapshots (`gpt-4o-2024-08-06`) and provider prefixes (`openai/gpt-4o`) find their family.
const TABLE: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 10.0, 0.125),
    ("gpt-5-mini", 0.25, 2.0, 0.025),
    ("gpt-5-nano", 0.05, 0.4, 0.005),
    ("gpt-4.1", 2.0, 8.0, 0.5),
    ("gpt-4.1-mini", 0.4, 1.6, 0.1),
    ("gpt-4.1-nano", 0.1, 0.4, 0.025),
    ("gpt-4o", 2.5, 10.0, 1.25),
    ("gpt-4o-mini", 0.15, 0.6, 0.075),
    ("gpt-4-turbo", 10.0, 30.0, 10.0),
    ("gpt-3.5-turbo", 0.5, 1.5, 0.5),
    ("o1", 15.0, 60.0, 7.5),
    ("o1-mini", 1.1, 4.4, 0.55),
    ("o3", 2.0, 8.0, 0.5),
    ("o3-mini", 1.1, 4.4, 0.55),
    ("o4-mini", 1.1, 4.4, 0.275),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("claude-opus-4", 15.0, 75.0, 1.5),
    ("claude-opus-4-5", 5.0, 25.0, 0.5),
    ("claude-sonnet-4", 3.0, 15.0, 0.3),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.3),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.3),
    ("claude-haiku-4-5", 1.0, 5.0, 0.1),
    ("claude-3-5-haiku", 0.8, 4.0, 0.08),
    ("claude-3-haiku", 0.25, 1.25, 0.03),
    ("gemini-2.5-pro", 1.25, 10.0, 0.31),
    ("gemini-2.5-flash", 0.3, 2.5, 0.075),
    ("gemini-2.5-flash-lite", 0.1, 0.4, 0.025),
    ("gemini-2.0-flash", 0.1, 0.4, 0.025),
    ("deepseek-chat", 0.27, 1.1, 0.07),
    ("deepseek-reasoner", 0.55, 2.19, 0.14),
    ("mistral-large", 2.0, 6.0, 2.0),
    ("mistral-small", 0.1, 0.3, 0.1),
    ("llama-3.3-70b", 0.59, 0.79, 0.59),
    ("llama-3.1-8b", 0.05, 0.08, 0.05),
];

/// The embedded price of an upstream model name, if the table knows its family.
pub fn lookup(model: &str) -> Option<Price> {
    let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    TABLE
        .iter()
        .filter(|(prefix, ..)| {
            name.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '@', ':', '.']))
        })
        .max_by_key(|(prefix, ..)| prefix.len())
        .map(|&(_, input, output, cached_input)| Price {
            input,
            output,
            cached_input,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_family_prefix_wins() {
        assert_eq!(lookup("gpt-4o-mini-2024-07-18").map(|p| p.input), Some(0.15));
        assert_eq!(lookup("gpt-4o-2024-08-06").map(|p| p.input), Some(2.5));
        assert_eq!(lookup("openai/gpt-4o").map(|p| p.output), Some(10.0));
        assert_eq!(lookup("claude-sonnet-4-20250514").map(|p| p.input), Some(3.0));
        assert_eq!(lookup("gpt-4oo"), None);
        assert_eq!(lookup("mock-ok"), None);
    }

    #[test]
    fn cost_bills_cached_tokens_at_their_rate() {
        let p = Price::from_config(&PriceConfig {
            input: 2.0,
            output: 10.0,
            cached_input: Some(0.5),
        });
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 400_000,
            ..Usage::default()
        };
        let expect = 0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 10.0;
        assert!((p.cost(&u) - expect).abs() < 1e-9, "{}", p.cost(&u));
        assert!((p.blended() - 4.0).abs() < 1e-9);
    }
}
