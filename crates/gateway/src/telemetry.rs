//! Metric names and the Prometheus recorder. `/metrics` renders the recorder installed here.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "switchyard_requests_total";
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
pub const IN_FLIGHT: &str = "switchyard_requests_in_flight";
pub const TOKENS: &str = "switchyard_tokens_total";
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
pub const TIME_TO_FIRST_TOKEN: &str = "switchyard_time_to_first_token_seconds";
pub const ATTEMPTS: &str = "switchyard_upstream_attempts_total";
pub const COST_MICRO_USD: &str = "switchyard_cost_micro_usd_total";
pub const DEPLOYMENT_AVAILABLE: &str = "switchyard_deployment_available";
pub const DEPLOYMENT_IN_FLIGHT: &str = "switchyard_deployment_in_flight";
pub const REDIS_ERRORS: &str = "switchyard_redis_errors_total";
pub const USAGE_PENDING_BYTES: &str = "switchyard_usage_journal_pending_bytes";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (None if another recorder was
/// installed first, in which case `/metrics` says so).
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TIME_TO_FIRST_TOKEN.into()), &buckets));
            match builder {
                Ok(b) => match b.install_recorder() {
                    Ok(handle) => {
                        describe();
                        Some(handle)
                    }
                    Err(e) => {
                        tracing::warn!("metrics recorder not installed: {e}");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!("metrics buckets rejected: {e}");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Requests answered, by route, model and status.");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request to the end of the response (streams included), by route and model."
    );
    metrics::describe_gauge!(
        IN_FLIGHT,
        "Requests being served now, streams included, by route."
    );
    metrics::describe_counter!(
        TOKENS,
        "Tokens processed, by model, provider and direction (input/output)."
    );
    metrics::describe_counter!(UPSTREAM_ERRORS, "Failed upstream calls, by provider and kind.");
    metrics::describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Time from request to the first streamed token, by model."
    );
    metrics::describe_counter!(
        ATTEMPTS,
        "Upstream attempts, by deployment and outcome (ok, failed, rejected)."
    );
    metrics::describe_gauge!(
        DEPLOYMENT_AVAILABLE,
        "1 when a deployment may be tried now, 0 when its circuit is open, it is banned or failing its health check."
    );
    metrics::describe_gauge!(DEPLOYMENT_IN_FLIGHT, "Requests in flight on a deployment.");
    metrics::describe_counter!(
        REDIS_ERRORS,
        "Redis calls that failed or timed out; the request was let through (fail open)."
    );
    metrics::describe_gauge!(
        USAGE_PENDING_BYTES,
        "Usage rows journaled but not yet in the database, in bytes (grows while the database is down)."
    );
    metrics::describe_counter!(
        COST_MICRO_USD,
        "Spend in millionths of a USD, from real usage and the deployment's price, by model and provider."
    );
}
