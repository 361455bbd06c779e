//! The router: the catalog of public models and their deployments, the live health of each deployment,
//! the strategies that order them, the plan of one request, and the attempts that walk it.

pub mod exec;
pub mod health;
pub mod plan;
pub mod price;
pub mod strategy;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use parking_lot::Mutex;

use crate::config::{Config, DeploymentConfig, LOCAL_PROVIDER, ModelType, RoutingConfig, StrategyName, Tier};
use crate::error::{Error, Result};
use crate::providers::Provider;
pub use health::{Health, InFlight, Probe, Unavailable};
pub use price::Price;

/// The model name that routes across every tier.
pub const AUTO_MODEL: &str = "auto";

/// What a deployment can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supports {
    pub tools: bool,
    pub images: bool,
    pub json_schema: bool,
}

/// One way to serve a model: a provider and the name it knows the model by, with its live health.
/// Two public models naming the same provider and upstream model share one deployment (and its health).
#[derive(Debug)]
pub struct Deployment {
    /// `provider/upstream-model`.
    pub id: String,
    pub provider: Provider,
    pub upstream_model: String,
    pub tier: Tier,
    pub weight: u32,
    /// Known price (config, or the embedded table); `None` when neither knows it.
    pub price: Option<Price>,
    pub context_length: Option<u32>,
    pub supports: Supports,
    pub max_parallel: Option<u32>,
    pub health: Health,
    /// Header values of every answer it serves, made once.
    pub header_values: DeploymentHeaders,
    pub(crate) counters: AttemptCounters,
    /// The metrics of the answers it serves, per model label.
    pub(crate) served_metrics: ServedMetrics,
}

#[derive(Debug)]
pub struct DeploymentHeaders {
    pub provider: HeaderValue,
    pub upstream_model: HeaderValue,
    pub tier: HeaderValue,
}

/// `switchyard_upstream_attempts_total` for one deployment, registered once (the metrics layer would
/// otherwise hash its labels on every request).
#[derive(Debug)]
pub(crate) struct AttemptCounters {
    pub ok: metrics::Counter,
    pub failed: metrics::Counter,
    pub rejected: metrics::Counter,
    pub busy: metrics::Counter,
}

impl AttemptCounters {
    fn new(id: &str) -> AttemptCounters {
        let c = |outcome: &'static str| metrics::counter!(crate::telemetry::ATTEMPTS, "deployment" => id.to_string(), "outcome" => outcome);
        AttemptCounters {
            ok: c("ok"),
            failed: c("failed"),
            rejected: c("rejected"),
            busy: c("busy"),
        }
    }
}

/// The metrics an answer adds to when it settles (tokens, cost, time to first token), for each model
/// name a deployment's answers are labelled with: registered on first use and kept, like
/// [`AttemptCounters`]. A deployment answers under a handful of names (its model, aliases, `auto`); past
/// [`ServedMetrics::MAX`] the handles are registered per answer, as the metrics layer would anyway.
#[derive(Debug, Default)]
pub(crate) struct ServedMetrics {
    by_model: parking_lot::RwLock<Vec<(Arc<str>, Arc<ServedCounters>)>>,
}

#[derive(Debug)]
pub(crate) struct ServedCounters {
    pub input_tokens: metrics::Counter,
    pub output_tokens: metrics::Counter,
    pub cost_micro_usd: metrics::Counter,
    pub ttft: metrics::Histogram,
}

impl ServedCounters {
    fn new(model: &Arc<str>, provider: &str) -> ServedCounters {
        use crate::telemetry::{COST_MICRO_USD, TIME_TO_FIRST_TOKEN, TOKENS};
        let tokens = |dir: &'static str| metrics::counter!(TOKENS, "model" => model.clone(), "provider" => provider.to_string(), "direction" => dir);
        ServedCounters {
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
            cost_micro_usd: metrics::counter!(COST_MICRO_USD, "model" => model.clone(), "provider" => provider.to_string()),
            ttft: metrics::histogram!(TIME_TO_FIRST_TOKEN, "model" => model.clone()),
        }
    }
}

impl ServedMetrics {
    const MAX: usize = 32;

    /// The handles for answers labelled `model`, served by `provider`.
    pub(crate) fn get(&self, model: &Arc<str>, provider: &str) -> Arc<ServedCounters> {
        if let Some((_, c)) = self.by_model.read().iter().find(|(m, _)| **m == **model) {
            return c.clone();
        }
        let mut by_model = self.by_model.write();
        if let Some((_, c)) = by_model.iter().find(|(m, _)| **m == **model) {
            return c.clone();
        }
        let c = Arc::new(ServedCounters::new(model, provider));
        if by_model.len() < Self::MAX {
            by_model.push((model.clone(), c.clone()));
        }
        c
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

impl Deployment {
    pub fn new(
        provider: Provider,
        upstream_model: String,
        tier: Tier,
        routing: &RoutingConfig,
        probe: Arc<Probe>,
    ) -> Deployment {
        let local = matches!(provider, Provider::Local(_));
        let cli = matches!(provider, Provider::Cli(_));
        let id = format!("{}/{}", provider.name(), upstream_model);
        Deployment {
            header_values: DeploymentHeaders {
                provider: header_value(provider.name()),
                upstream_model: header_value(&upstream_model),
                tier: HeaderValue::from_static(tier.as_str()),
            },
            counters: AttemptCounters::new(&id),
            served_metrics: ServedMetrics::default(),
            id,
            price: if local {
                Some(Price::FREE)
            } else if cli {
                // A CLI bills its own way (a subscription); a configured price still applies.
                None
            } else {
                price::lookup(&upstream_model)
            },
            provider,
            upstream_model,
            tier,
            weight: 1,
            context_length: None,
            // The engine parses no tool calls and follows no schema yet; remote providers are trusted.
            // CLIs get the caller's tools described in the prompt, and no images or schemas.
            supports: Supports {
                tools: !local,
                images: !local && !cli,
                json_schema: !local && !cli,
            },
            max_parallel: None,
            health: Health::new(routing.breaker.clone(), probe),
        }
    }

    pub fn busy(&self) -> bool {
        self.max_parallel.is_some_and(|m| self.health.in_flight() >= m)
            || matches!(&self.provider, Provider::Local(p) if p.is_saturated())
            || matches!(&self.provider, Provider::Cli(p) if p.is_busy())
    }
}

#[derive(Debug)]
pub struct ModelEntry {
    pub public_name: String,
    pub name_header: HeaderValue,
    pub kind: ModelType,
    pub context_length: Option<u32>,
    pub deployments: Vec<Arc<Deployment>>,
    pub created: u64,
    pub strategy: StrategyName,
    pub aliases: Vec<String>,
    /// Whether `model: "auto"` may pick it.
    pub auto: bool,
    /// Smooth weighted round robin state, one slot per deployment.
    pub(crate) wrr: Mutex<Vec<i64>>,
}

impl ModelEntry {
    pub fn new(public_name: String, kind: ModelType, deployments: Vec<Arc<Deployment>>) -> ModelEntry {
        let n = deployments.len();
        ModelEntry {
            name_header: header_value(&public_name),
            public_name,
            kind,
            context_length: None,
            deployments,
            created: now_secs(),
            strategy: StrategyName::Priority,
            aliases: Vec::new(),
            auto: true,
            wrr: Mutex::new(vec![0; n]),
        }
    }

    /// The tiers its deployments run in, in `tier_order`.
    pub fn tiers(&self) -> Vec<Tier> {
        let mut t: Vec<Tier> = self.deployments.iter().map(|d| d.tier).collect();
        t.sort();
        t.dedup();
        t
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Catalog {
    models: foldhash::HashMap<String, Arc<ModelEntry>>,
    aliases: foldhash::HashMap<String, String>,
    order: Vec<String>,
    /// Every distinct deployment, for health pages and checks.
    deployments: Vec<Arc<Deployment>>,
    /// Remote providers with active health checks.
    probes: Vec<(Provider, Arc<Probe>)>,
    pub routing: RoutingConfig,
}

impl Catalog {
    /// Builds the catalog from config and the already loaded local models (each a model of its own,
    /// which other models may also name as a deployment with `provider = "local"`).
    pub fn build(config: &Config, local: Vec<ModelEntry>) -> Result<Catalog> {
        let routing = config.routing.clone();
        let mut providers = HashMap::new();
        let mut probes: HashMap<String, Arc<Probe>> = HashMap::new();
        let mut catalog = Catalog {
            routing: routing.clone(),
            ..Catalog::default()
        };
        for (name, pc) in &config.providers {
            let provider = Provider::from_config(name, pc)?;
            let probe: Arc<Probe> = Arc::default();
            if routing.health_check_interval_ms > 0 && pc.health_check.unwrap_or(true) {
                catalog.probes.push((provider.clone(), probe.clone()));
            }
            providers.insert(name.clone(), provider);
            probes.insert(name.clone(), probe);
        }
        let mut by_id: HashMap<String, Arc<Deployment>> = HashMap::new();
        let mut local_deps: HashMap<String, Arc<Deployment>> = HashMap::new();
        for entry in local {
            for d in &entry.deployments {
                by_id.insert(d.id.clone(), d.clone());
                catalog.deployments.push(d.clone());
                local_deps.insert(entry.public_name.clone(), d.clone());
            }
            catalog.insert(entry);
        }
        for (public, mc) in &config.models {
            if mc.is_local() {
                if let Some(existing) = catalog.models.get(public) {
                    // Local models get their routing settings from config too.
                    let mut e = ModelEntry::new(public.clone(), existing.kind, existing.deployments.clone());
                    e.context_length = existing.context_length;
                    e.aliases.clone_from(&mc.aliases);
                    e.auto = mc.auto.unwrap_or(true);
                    catalog.insert(e);
                }
                continue;
            }
            let mut deps = Vec::new();
            for dc in mc.deployment_list() {
                let dep =
                    catalog.deployment(public, &dc, &providers, &probes, &local_deps, &mut by_id, config)?;
                deps.push(dep);
            }
            let kind = mc.kind.unwrap_or_default();
            let mut e = ModelEntry::new(public.clone(), kind, deps);
            e.context_length = mc
                .context_length
                .or_else(|| e.deployments.iter().filter_map(|d| d.context_length).max());
            e.strategy = mc.strategy.unwrap_or_default();
            e.aliases.clone_from(&mc.aliases);
            e.auto = mc.auto.unwrap_or(true);
            catalog.insert(e);
        }
        Ok(catalog)
    }

    #[allow(clippy::too_many_arguments)]
    fn deployment(
        &mut self,
        public: &str,
        dc: &DeploymentConfig,
        providers: &HashMap<String, Provider>,
        probes: &HashMap<String, Arc<Probe>>,
        local_deps: &HashMap<String, Arc<Deployment>>,
        by_id: &mut HashMap<String, Arc<Deployment>>,
        config: &Config,
    ) -> Result<Arc<Deployment>> {
        let pname = dc.provider.get_ref();
        let upstream = dc.model.clone().unwrap_or_else(|| public.to_string());
        if pname == LOCAL_PROVIDER {
            return local_deps.get(&upstream).cloned().ok_or_else(|| {
                Error::internal(format!(
                    "model {public}: no local model named `{upstream}` is declared (provider = \"local\")"
                ))
            });
        }
        let Some(provider) = providers.get(pname) else {
            return Err(Error::internal(format!(
                "model {public}: provider {pname} is not defined"
            )));
        };
        let id = format!("{pname}/{upstream}");
        if let Some(d) = by_id.get(&id) {
            return Ok(d.clone());
        }
        let pc = config.providers.get(pname);
        let default_tier = match provider {
            Provider::Cli(_) => Tier::Cli,
            _ => pc.and_then(|p| p.openai_preset()).map_or(Tier::Cloud, |p| p.tier),
        };
        let tier = dc.tier.or(pc.and_then(|p| p.tier)).unwrap_or(default_tier);
        let probe = probes.get(pname).cloned().unwrap_or_default();
        let mut d = Deployment::new(provider.clone(), upstream, tier, &self.routing, probe);
        d.weight = dc.weight.unwrap_or(1).max(1);
        if let Some(p) = &dc.price {
            d.price = Some(Price::from_config(p));
        }
        d.context_length = dc.context_length;
        if let Some(s) = dc.supports {
            d.supports = Supports {
                tools: s.tools.unwrap_or(d.supports.tools),
                images: s.images.unwrap_or(d.supports.images),
                json_schema: s.json_schema.unwrap_or(d.supports.json_schema),
            };
        }
        d.max_parallel = dc.max_parallel;
        let d = Arc::new(d);
        by_id.insert(id, d.clone());
        self.deployments.push(d.clone());
        Ok(d)
    }

    pub fn insert(&mut self, entry: ModelEntry) {
        if !self.models.contains_key(&entry.public_name) {
            self.order.push(entry.public_name.clone());
        }
        for d in &entry.deployments {
            if !self.deployments.iter().any(|x| Arc::ptr_eq(x, d)) {
                self.deployments.push(d.clone());
            }
        }
        for a in &entry.aliases {
            self.aliases.insert(a.clone(), entry.public_name.clone());
        }
        self.models.insert(entry.public_name.clone(), Arc::new(entry));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.models
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|n| self.models.get(n)))
    }

    /// Resolves a model name (or alias) or fails with `model_not_found`.
    pub fn resolve(&self, name: &str) -> Result<&Arc<ModelEntry>> {
        self.get(name).ok_or_else(|| Error::model_not_found(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ModelEntry>> {
        self.order.iter().filter_map(|n| self.models.get(n))
    }

    /// Checks every remote provider on `[routing] health_check_interval_ms` until dropped. A provider
    /// that cannot be reached (or answers 5xx) is skipped by every plan until a check passes again.
    pub async fn health_checks(&self) {
        let every = std::time::Duration::from_millis(self.routing.health_check_interval_ms.max(100));
        let timeout = every.min(std::time::Duration::from_secs(10));
        if self.probes.is_empty() {
            return std::future::pending().await;
        }
        // The first check comes one interval after start: nothing is probed while the server boots.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let checks = self.probes.iter().map(|(p, probe)| async move {
                if let Some(result) = p.probe(timeout).await {
                    if let Err(e) = &result
                        && probe.down().is_none()
                    {
                        tracing::warn!(provider = p.name(), "health check failed: {e}");
                    }
                    probe.set(result);
                }
            });
            futures::future::join_all(checks).await;
        }
    }

    pub fn deployments(&self) -> &[Arc<Deployment>] {
        &self.deployments
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
