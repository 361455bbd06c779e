//! The plan of one request: which deployments, in which order. It reads the request's own routing
//! fields (taken out of the body so they never reach an upstream), accepted the ways the best-known
//! routers take them:
//!
//! - `models: ["a", "b"]` — an ordered fallback list (with or without `model`, which goes first);
//! - `provider: {order, only, ignore, sort, max_price: {prompt, completion}, allow_fallbacks}`;
//! - `gateway: {models, mode: "pool" | "fallback", routing: {strategy, max_ttft_ms, min_throughput_tps,
//!   max_cost_per_1m, providers, prefer, exclude, allow_fallbacks, max_fallback_attempts}}`;
//! - a model-name suffix `:cost`, `:floor` (cheapest), `:ttft` (fastest first token), `:tps`, `:nitro`
//!   (highest throughput), honoured only when the name has exactly one colon;
//! - `model: "auto"`: every chat model, walked tier by tier in `[routing] tier_order`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::strategy::{self, Estimate};
use super::{AUTO_MODEL, Catalog, Deployment, ModelEntry, Unavailable};
use crate::config::{ModelType, StrategyName, Tier};
use crate::error::{Error, ErrorKind, Result};

/// What the request needs of a deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub tools: bool,
    pub images: bool,
    pub json_schema: bool,
    pub estimate: Estimate,
}

/// The routing asked for by one request.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    /// (name, the param that named it), in order.
    pub models: Vec<(String, String)>,
    pub pool: bool,
    pub strategy: Option<StrategyName>,
    pub order: Vec<String>,
    pub only: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub prefer: Vec<String>,
    pub max_price_prompt: Option<f64>,
    pub max_price_completion: Option<f64>,
    pub max_cost_per_1m: Option<f64>,
    pub max_ttft_ms: Option<f64>,
    pub min_tps: Option<f64>,
    pub allow_fallbacks: bool,
    pub max_fallback_attempts: Option<u32>,
}

fn bad(param: &str, msg: impl Into<String>) -> Error {
    Error::invalid_param(param, msg)
}

fn strings(v: &Value, param: &str) -> Result<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(bad(param, format!("'{param}' must be an array of strings.")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    bad(
                        &format!("{param}[{i}]"),
                        format!("'{param}[{i}]' must be a non-empty string."),
                    )
                })
        })
        .collect()
}

fn number(v: &Value, param: &str) -> Result<f64> {
    v.as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| bad(param, format!("'{param}' must be a number >= 0.")))
}

fn object<'a>(v: &'a Value, param: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| bad(param, format!("'{param}' must be an object.")))
}

fn boolean(v: &Value, param: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| bad(param, format!("'{param}' must be a boolean.")))
}

fn sort_strategy(s: &str, param: &str) -> Result<StrategyName> {
    match s {
        "price" => Ok(StrategyName::Cost),
        "throughput" => Ok(StrategyName::Throughput),
        "latency" => Ok(StrategyName::Latency),
        _ => StrategyName::parse(s).ok_or_else(|| {
            bad(
                param,
                format!(
                    "'{param}' must be one of price, throughput, latency, priority, weighted, least-busy, cost, balanced; got '{s}'."
                ),
            )
        }),
    }
}

impl RouteRequest {
    /// Takes `models`, `provider` and `gateway` out of the body and checks them. Leaves `model` set to
    /// the first model named, so the surface's own validation sees the shape it expects.
    pub fn take(obj: &mut Map<String, Value>) -> Result<RouteRequest> {
        let mut r = RouteRequest {
            allow_fallbacks: true,
            ..RouteRequest::default()
        };
        let model = match obj.get("model") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(_) => return Err(bad("model", "'model' must be a string.")),
        };
        if let Some(m) = &model {
            r.models.push((m.clone(), "model".into()));
        }
        if let Some(v) = obj.remove("models") {
            for (i, m) in strings(&v, "models")?.into_iter().enumerate() {
                if !r.models.iter().any(|(n, _)| *n == m) {
                    r.models.push((m, format!("models[{i}]")));
                }
            }
        }
        if let Some(v) = obj.remove("provider") {
            let p = object(&v, "provider")?;
            for (k, v) in p {
                let param = format!("provider.{k}");
                match k.as_str() {
                    "order" => r.order = strings(v, &param)?,
                    "only" => r.only = Some(strings(v, &param)?),
                    "ignore" => r.ignore = strings(v, &param)?,
                    "sort" => {
                        let s = v
                            .as_str()
                            .ok_or_else(|| bad(&param, format!("'{param}' must be a string.")))?;
                        r.strategy = Some(match s {
                            "price" | "throughput" | "latency" => sort_strategy(s, &param)?,
                            _ => {
                                return Err(bad(
                                    &param,
                                    format!(
                                        "'{param}' must be one of price, throughput, latency; got '{s}'."
                                    ),
                                ));
                            }
                        });
                    }
                    "max_price" => {
                        for (pk, pv) in object(v, &param)? {
                            let pp = format!("{param}.{pk}");
                            match pk.as_str() {
                                "prompt" => r.max_price_prompt = Some(number(pv, &pp)?),
                                "completion" => r.max_price_completion = Some(number(pv, &pp)?),
                                _ => {}
                            }
                        }
                    }
                    "allow_fallbacks" => r.allow_fallbacks = boolean(v, &param)?,
                    // Other router options (data_collection, quantizations, …) do not apply here.
                    _ => {}
                }
            }
        }
        if let Some(v) = obj.remove("gateway") {
            let g = object(&v, "gateway")?;
            if let Some(ms) = g.get("models") {
                if model.is_some() {
                    return Err(bad(
                        "gateway.models",
                        "Send either 'model' or 'gateway.models', not both.",
                    ));
                }
                for (i, m) in strings(ms, "gateway.models")?.into_iter().enumerate() {
                    if !r.models.iter().any(|(n, _)| *n == m) {
                        r.models.push((m, format!("gateway.models[{i}]")));
                    }
                }
            }
            if let Some(mode) = g.get("mode") {
                r.pool = match mode.as_str() {
                    Some("pool") => true,
                    Some("fallback") => false,
                    _ => {
                        return Err(bad(
                            "gateway.mode",
                            "'gateway.mode' must be 'pool' or 'fallback'.",
                        ));
                    }
                };
            }
            if let Some(rt) = g.get("routing") {
                for (k, v) in object(rt, "gateway.routing")? {
                    let param = format!("gateway.routing.{k}");
                    match k.as_str() {
                        "strategy" => {
                            let s = v
                                .as_str()
                                .ok_or_else(|| bad(&param, format!("'{param}' must be a string.")))?;
                            r.strategy = Some(sort_strategy(s, &param)?);
                        }
                        "max_ttft_ms" => r.max_ttft_ms = Some(number(v, &param)?),
                        "min_throughput_tps" => r.min_tps = Some(number(v, &param)?),
                        "max_cost_per_1m" => r.max_cost_per_1m = Some(number(v, &param)?),
                        "providers" => r.only = Some(strings(v, &param)?),
                        "prefer" => r.prefer = strings(v, &param)?,
                        "exclude" => r.ignore.extend(strings(v, &param)?),
                        "allow_fallbacks" => r.allow_fallbacks = boolean(v, &param)?,
                        "max_fallback_attempts" => {
                            let n = v
                                .as_u64()
                                .ok_or_else(|| bad(&param, format!("'{param}' must be an integer >= 0.")))?;
                            r.max_fallback_attempts = Some(u32::try_from(n).unwrap_or(u32::MAX));
                        }
                        _ => return Err(bad(&param, format!("Unknown routing option '{k}'."))),
                    }
                }
            }
        }
        // No model at all is left to the surface's own validation, which says so in its own words.
        if model.is_none()
            && let Some((first, _)) = r.models.first()
        {
            obj.insert("model".into(), Value::String(first.clone()));
        }
        Ok(r)
    }

    /// The single model of a plain request (no list, no constraints), for the cheap path.
    fn plain(&self) -> bool {
        self.models.len() == 1
            && !self.pool
            && self.strategy.is_none()
            && self.order.is_empty()
            && self.only.is_none()
            && self.ignore.is_empty()
            && self.prefer.is_empty()
            && self.max_price_prompt.is_none()
            && self.max_price_completion.is_none()
            && self.max_cost_per_1m.is_none()
            && self.max_ttft_ms.is_none()
            && self.min_tps.is_none()
    }
}

/// Rough prompt size: a token per four characters of text, a fixed charge per image.
pub fn estimate_tokens(v: &Value) -> u64 {
    fn walk(v: &Value, acc: &mut u64) {
        match v {
            Value::String(s) => *acc += s.len() as u64,
            Value::Array(a) => a.iter().for_each(|x| walk(x, acc)),
            Value::Object(o) => {
                if o.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.contains("image"))
                {
                    *acc += 85 * 4;
                    return;
                }
                o.values().for_each(|x| walk(x, acc));
            }
            _ => *acc += 1,
        }
    }
    let mut chars = 0;
    walk(v, &mut chars);
    chars / 4 + 1
}

fn has_image(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_image),
        // One pass over the members rather than two lookups (see `Needs::of_chat`).
        Value::Object(o) => o.iter().any(|(k, v)| match k.as_str() {
            "type" => v
                .as_str()
                .is_some_and(|t| matches!(t, "image_url" | "image" | "input_image")),
            "content" => has_image(v),
            _ => false,
        }),
        _ => false,
    }
}

impl Needs {
    /// What an OpenAI chat body (or an Anthropic messages body) needs.
    pub fn of_chat(obj: &Map<String, Value>) -> Needs {
        // One pass over the members instead of a lookup for each: serde_json's maps hash every key
        // looked up with SipHash, and these eight lookups were 1,400 instructions a request.
        let mut m: [Option<&Value>; 8] = [None; 8];
        for (k, v) in obj {
            let i = match k.as_str() {
                "tools" => 0,
                "tool_choice" => 1,
                "messages" => 2,
                "response_format" => 3,
                "output_config" => 4,
                "system" => 5,
                "max_completion_tokens" => 6,
                "max_tokens" => 7,
                _ => continue,
            };
            m[i] = Some(v);
        }
        let [
            tools_v,
            tool_choice,
            messages,
            response_format,
            output_config,
            system,
            max_completion,
            max_tokens,
        ] = m;
        let tools = tools_v.and_then(Value::as_array).is_some_and(|t| !t.is_empty())
            && tool_choice.and_then(Value::as_str) != Some("none");
        let messages = messages.unwrap_or(&Value::Null);
        let json_schema = response_format
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text")
            || output_config.and_then(|o| o.get("format")).is_some();
        let prompt = estimate_tokens(messages)
            + system.map_or(0, estimate_tokens)
            + tools_v.map_or(0, estimate_tokens);
        let output = [max_completion, max_tokens]
            .into_iter()
            .find_map(|v| v.and_then(Value::as_u64))
            .unwrap_or(256);
        Needs {
            tools,
            images: has_image(messages),
            json_schema,
            estimate: Estimate {
                prompt_tokens: prompt,
                output_tokens: output,
            },
        }
    }

    /// What a completions or embeddings body needs.
    pub fn of_input(obj: &Map<String, Value>, key: &str) -> Needs {
        Needs {
            estimate: Estimate {
                prompt_tokens: obj.get(key).map_or(1, estimate_tokens),
                output_tokens: obj.get("max_tokens").and_then(Value::as_u64).unwrap_or(16),
            },
            ..Needs::default()
        }
    }
}

/// One deployment to try, and the public model it serves.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub entry: Arc<ModelEntry>,
    pub dep: Arc<Deployment>,
}

#[derive(Debug)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub strategy: StrategyName,
    pub max_attempts: u32,
    /// The name the client asked for (for labels).
    pub requested: String,
    /// What the request needs, when the plan had to ask (admission reads them instead of asking again).
    pub needs: Option<Needs>,
}

/// The error for a model of the wrong kind on this route.
pub fn wrong_kind(entry: &ModelEntry, want: ModelType, param: &str) -> Error {
    let name = &entry.public_name;
    let msg = match (want, entry.kind) {
        (ModelType::Embedding, k) => {
            format!(
                "The model `{name}` is a {} model and does not produce embeddings.",
                k.as_str()
            )
        }
        (_, ModelType::Embedding) => {
            format!("The model `{name}` is an embedding model; use /v1/embeddings.")
        }
        (_, k) => format!(
            "The model `{name}` is a {} model and does not support chat; use /v1/completions.",
            k.as_str()
        ),
    };
    Error::invalid_param(param, msg)
}

/// Splits a routing suffix off a name (`gpt-4o:cost`), only when the name has exactly one colon.
fn suffix(name: &str) -> Option<(&str, StrategyName)> {
    if name.matches(':').count() != 1 {
        return None;
    }
    let (base, s) = name.split_once(':')?;
    let strategy = match s {
        "cost" | "floor" => StrategyName::Cost,
        "ttft" => StrategyName::Latency,
        "tps" | "nitro" => StrategyName::Throughput,
        _ => return None,
    };
    Some((base, strategy))
}

/// What removed candidates, for the 400 that says which constraint no deployment meets.
#[derive(Default)]
struct Removed(Vec<String>);

impl Removed {
    fn note(&mut self, what: String) {
        if !self.0.contains(&what) {
            self.0.push(what);
        }
    }
}

/// `needs` is only asked for when the plan has a choice to make (a plain request to a model with one
/// deployment skips it).
pub fn build(
    catalog: &Catalog,
    req: &RouteRequest,
    needs: impl FnOnce() -> Needs,
    kinds: &[ModelType],
) -> Result<Plan> {
    let kind = kinds.first().copied().unwrap_or_default();
    let routing = &catalog.routing;
    let now = Instant::now();
    let mut strategy_override = req.strategy;
    let Some((requested, _)) = req.models.first().cloned() else {
        return Err(bad("model", "Missing required parameter: 'model'."));
    };

    // The cheap path: one model, one deployment, nothing asked.
    if req.plain() {
        let (name, param) = &req.models[0];
        if let Some(entry) = catalog.get(name)
            && entry.deployments.len() == 1
        {
            if !kinds.contains(&entry.kind) {
                return Err(wrong_kind(entry, kind, param));
            }
            // Its health is checked when the attempt claims it.
            let dep = entry.deployments[0].clone();
            return Ok(Plan {
                candidates: vec![Candidate {
                    entry: entry.clone(),
                    dep,
                }],
                strategy: entry.strategy,
                max_attempts: routing.max_attempts,
                requested,
                needs: None,
            });
        }
    }

    let needs = &needs();
    // Resolve names; `auto` expands to every model that takes part.
    let mut auto = false;
    let mut entries: Vec<Arc<ModelEntry>> = Vec::new();
    for (name, param) in &req.models {
        if name == AUTO_MODEL {
            auto = true;
            continue;
        }
        let entry = match catalog.get(name) {
            Some(e) => e.clone(),
            None => match suffix(name).and_then(|(base, s)| catalog.get(base).map(|e| (e, s))) {
                Some((e, s)) => {
                    strategy_override.get_or_insert(s);
                    e.clone()
                }
                None => {
                    let mut e = Error::model_not_found(name);
                    e.param = Some(param.clone());
                    return Err(e);
                }
            },
        };
        if !kinds.contains(&entry.kind) {
            return Err(wrong_kind(&entry, kind, param));
        }
        if !entries.iter().any(|e| Arc::ptr_eq(e, &entry)) {
            entries.push(entry);
        }
    }

    // Groups, each ordered by its strategy; the groups are walked in order.
    let mut groups: Vec<Vec<Candidate>> = Vec::new();
    let mut seen: HashSet<*const Deployment> = HashSet::new();
    let mut group_of = |entries: &[&Arc<ModelEntry>], strategy: StrategyName, tier: Option<Tier>| {
        let mut deps: Vec<Arc<Deployment>> = Vec::new();
        let mut owner: Vec<(Arc<Deployment>, Arc<ModelEntry>)> = Vec::new();
        for e in entries {
            for d in &e.deployments {
                if tier.is_some_and(|t| d.tier != t) || !seen.insert(Arc::as_ptr(d)) {
                    continue;
                }
                deps.push(d.clone());
                owner.push((d.clone(), (*e).clone()));
            }
        }
        let single = (entries.len() == 1).then(|| entries[0].as_ref());
        strategy::order(strategy, &mut deps, single, needs.estimate);
        deps.into_iter()
            .filter_map(|d| {
                owner
                    .iter()
                    .find(|(x, _)| Arc::ptr_eq(x, &d))
                    .map(|(_, e)| Candidate {
                        entry: e.clone(),
                        dep: d.clone(),
                    })
            })
            .collect::<Vec<_>>()
    };
    let strategy;
    if req.pool && !entries.is_empty() {
        strategy = strategy_override.unwrap_or(entries[0].strategy);
        let all: Vec<&Arc<ModelEntry>> = entries.iter().collect();
        groups.push(group_of(&all, strategy, None));
    } else {
        strategy = strategy_override.unwrap_or(entries.first().map_or(routing.auto_strategy, |e| e.strategy));
        for e in &entries {
            groups.push(group_of(&[e], strategy_override.unwrap_or(e.strategy), None));
        }
    }
    if auto {
        let pool: Vec<&Arc<ModelEntry>> = catalog
            .iter()
            .filter(|e| e.auto && kinds.contains(&e.kind))
            .collect();
        let s = strategy_override.unwrap_or(routing.auto_strategy);
        for tier in &routing.tier_order {
            groups.push(group_of(&pool, s, Some(*tier)));
        }
    }

    // Constraints: what no deployment may break.
    let mut removed = Removed::default();
    let mut demoted: Vec<Candidate> = Vec::new();
    let mut kept: Vec<Candidate> = Vec::new();
    let ctx_of = |c: &Candidate| c.dep.context_length.or(c.entry.context_length);
    for c in groups.into_iter().flatten() {
        let d = &c.dep;
        let pname = d.provider.name();
        if let Some(only) = &req.only
            && !only.iter().any(|p| p == pname)
        {
            removed.note(format!("provider.only / gateway.routing.providers = {only:?}"));
            continue;
        }
        if req.ignore.iter().any(|p| p == pname) {
            removed.note(format!(
                "provider.ignore / gateway.routing.exclude = {:?}",
                req.ignore
            ));
            continue;
        }
        if !req.allow_fallbacks && !req.order.is_empty() && !req.order.iter().any(|p| p == pname) {
            removed.note(format!(
                "provider.order = {:?} with allow_fallbacks = false",
                req.order
            ));
            continue;
        }
        if let Some(max) = req.max_price_prompt
            && d.price.is_none_or(|p| p.input > max)
        {
            removed.note(format!("provider.max_price.prompt <= {max} USD per 1M tokens"));
            continue;
        }
        if let Some(max) = req.max_price_completion
            && d.price.is_none_or(|p| p.output > max)
        {
            removed.note(format!(
                "provider.max_price.completion <= {max} USD per 1M tokens"
            ));
            continue;
        }
        if let Some(max) = req.max_cost_per_1m
            && d.price.is_none_or(|p| p.blended() > max)
        {
            removed.note(format!(
                "gateway.routing.max_cost_per_1m <= {max} USD (blended 3:1 input:output)"
            ));
            continue;
        }
        if let Some(max) = req.max_ttft_ms
            && d.health.ttft_ms().is_some_and(|t| t > max)
        {
            removed.note(format!("gateway.routing.max_ttft_ms <= {max}"));
            continue;
        }
        if let Some(min) = req.min_tps
            && d.health.tps().is_some_and(|t| t < min)
        {
            removed.note(format!("gateway.routing.min_throughput_tps >= {min}"));
            continue;
        }
        let mut lacks = Vec::new();
        if needs.tools && !d.supports.tools {
            lacks.push("tools");
        }
        if needs.images && !d.supports.images {
            lacks.push("images");
        }
        if needs.json_schema && !d.supports.json_schema {
            lacks.push("structured output");
        }
        let too_long = ctx_of(&c).is_some_and(|n| needs.estimate.prompt_tokens > u64::from(n));
        if too_long {
            lacks.push("a context this long");
        }
        if !lacks.is_empty() {
            if auto && !entries.iter().any(|e| Arc::ptr_eq(e, &c.entry)) {
                removed.note(format!("support for {}", lacks.join(", ")));
            } else {
                // Named explicitly: still tried, after every deployment that can serve it.
                demoted.push(c);
            }
            continue;
        }
        kept.push(c);
    }
    kept.extend(demoted);
    if kept.is_empty() {
        let what = if removed.0.is_empty() {
            "any deployment".to_string()
        } else {
            removed.0.join("; ")
        };
        return Err(Error::invalid(format!(
            "No deployment of `{requested}` meets the request's constraints: {what}."
        ))
        .with_code("no_deployment_meets_constraints"));
    }

    // Preferences: `order` first (in its order), then `prefer`; the rest keep their place.
    let rank = |c: &Candidate| -> (usize, usize) {
        let p = c.dep.provider.name();
        let o = req.order.iter().position(|x| x == p).unwrap_or(usize::MAX);
        let f = req.prefer.iter().position(|x| x == p).unwrap_or(usize::MAX);
        (o, f)
    };
    if !req.order.is_empty() || !req.prefer.is_empty() {
        kept.sort_by_key(|c| rank(c));
    }

    // Health: open, banned or failing deployments are skipped; busy ones go last.
    let mut ready = Vec::new();
    let mut busy = Vec::new();
    let mut skipped = Vec::new();
    for c in kept {
        match c.dep.health.check(now, false) {
            Err(u) => skipped.push((c.dep.id.clone(), u)),
            Ok(()) if c.dep.busy() => busy.push(c),
            Ok(()) => ready.push(c),
        }
    }
    ready.extend(busy);
    if ready.is_empty() {
        return Err(unavailable(&requested, &skipped));
    }
    if !req.allow_fallbacks && req.order.is_empty() {
        ready.truncate(1);
    }
    let mut max_attempts = routing.max_attempts;
    if let Some(n) = req.max_fallback_attempts {
        max_attempts = max_attempts.min(n.saturating_add(1));
    }
    Ok(Plan {
        candidates: ready,
        strategy,
        max_attempts,
        requested,
        needs: Some(*needs),
    })
}

/// The answer when every deployment is out for now: when they are all banned for an upstream's own
/// answer (a 429 until its `Retry-After`, a 401/403), that answer again, as the upstream would give it;
/// otherwise 503. `Retry-After` says when the first one comes back.
pub fn unavailable(model: &str, skipped: &[(String, Unavailable)]) -> Error {
    let now = Instant::now();
    let banned: Vec<(&Instant, &Error)> = skipped
        .iter()
        .filter_map(|(_, u)| match u {
            Unavailable::Banned {
                until,
                error: Some(e),
                ..
            } => Some((until, e.as_ref())),
            _ => None,
        })
        .collect();
    if !banned.is_empty()
        && banned.len() == skipped.len()
        && let Some((until, e)) = banned.iter().min_by_key(|(u, _)| **u)
    {
        let mut e = (*e).clone();
        if e.retry_after().is_some() {
            let left = until.saturating_duration_since(now).as_secs_f64().ceil().max(1.0);
            e.set_retry_after(Some(Duration::from_secs(left as u64)));
        }
        return e;
    }
    let why: Vec<String> = skipped
        .iter()
        .map(|(id, u)| format!("{id}: {}", u.describe()))
        .collect();
    let retry = skipped
        .iter()
        .filter_map(|(_, u)| u.until())
        .min()
        .map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(now).max(Duration::from_secs(1))
        });
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "No deployment of `{model}` is available right now ({}).",
            why.join("; ")
        ),
    )
    .with_code("no_healthy_deployment")
    .with_retry_after(Duration::from_secs(retry.as_secs_f64().ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn take(v: Value) -> Result<RouteRequest> {
        let Value::Object(mut m) = v else { unreachable!() };
        RouteRequest::take(&mut m)
    }

    #[test]
    fn routing_fields_are_taken_out_and_checked() {
        let mut m =
            json!({"models": ["a", "b"], "provider": {"order": ["x"], "sort": "price"}, "messages": []})
                .as_object()
                .cloned()
                .unwrap();
        let r = RouteRequest::take(&mut m).unwrap();
        assert_eq!(m["model"], json!("a"));
        assert!(!m.contains_key("models") && !m.contains_key("provider"));
        assert_eq!(r.models.len(), 2);
        assert_eq!(r.strategy, Some(StrategyName::Cost));
        let e = take(json!({"model": "a", "gateway": {"models": ["b"]}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("gateway.models"));
        let e = take(json!({"model": "a", "provider": {"sort": "vibes"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("provider.sort"));
        let e = take(json!({"model": "a", "gateway": {"routing": {"max_cost_per_1m": -1}}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("gateway.routing.max_cost_per_1m"));
        let e = take(json!({"models": [1]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("models[0]"));
    }

    #[test]
    fn suffixes_need_exactly_one_colon() {
        assert_eq!(suffix("gpt:cost").map(|x| x.1), Some(StrategyName::Cost));
        assert_eq!(suffix("gpt:nitro").map(|x| x.1), Some(StrategyName::Throughput));
        assert_eq!(suffix("qwen3:8b:cost"), None);
        assert_eq!(suffix("qwen3:8b"), None);
    }

    #[test]
    fn needs_see_tools_images_and_schemas() {
        let n = Needs::of_chat(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                   "tools": [{"type": "function"}], "response_format": {"type": "json_schema"}})
            .as_object()
            .unwrap(),
        );
        assert!(n.tools && n.images && n.json_schema);
        let n = Needs::of_chat(
            json!({"messages": [{"role": "user", "content": "hi"}]})
                .as_object()
                .unwrap(),
        );
        assert!(!n.tools && !n.images && !n.json_schema);
    }
}
