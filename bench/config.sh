# The gateway config every benchmark measures, sourced by bench/run.sh and bench/instructions.sh:
# every feature on (global limits, two deployments of the model; the issued key below adds its own
# limits and a budget).
#
#   bench_config MOCK_URL MASTER_KEY > config.toml

# The issued key's limits: high enough never to refuse, so they are checked on every request.
BENCH_KEY_BODY='{"name": "bench", "rpm": 100000000, "tpm": 100000000000, "max_parallel": 100000, "budget_usd": 1000000}'

bench_config() {
  cat <<TOML
[server]
address = "127.0.0.1:0"
[auth]
master_key = "$2"
[limits]
max_requests_per_minute = 100000000
max_tokens_per_minute = 100000000000
[providers.a]
kind = "openai"
base_url = "$1/v1"
[providers.b]
kind = "openai"
base_url = "$1/v1"
[models.bench]
strategy = "weighted"
[[models.bench.deployments]]
provider = "a"
model = "mock-ok"
[[models.bench.deployments]]
provider = "b"
model = "mock-ok"
TOML
}
