//! `mock-upstream --listen 127.0.0.1:9001 [--require-key KEY] [--aws-credentials AKID:SECRET]
//! [--tls-cert FILE --tls-key FILE]`

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use mock_upstream::{MockServer, MockState};

#[derive(Parser, Debug)]
#[command(
    name = "mock-upstream",
    about = "Fake OpenAI / Anthropic / Gemini / Bedrock upstream for tests and benchmarks"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Require this API key (OpenAI: `Authorization: Bearer KEY`; Anthropic: `x-api-key: KEY`;
    /// Gemini: `x-goog-api-key: KEY` or `?key=KEY`).
    #[arg(long, env = "MOCK_UPSTREAM_REQUIRE_KEY")]
    require_key: Option<String>,
    /// Verify AWS SigV4 signatures on the Bedrock routes with this access key id and secret.
    #[arg(long, env = "MOCK_UPSTREAM_AWS_CREDENTIALS", value_name = "AKID:SECRET", value_parser = parse_aws_credentials)]
    aws_credentials: Option<(String, String)>,
    /// Serve HTTPS (ALPN h2 and http/1.1) with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

fn parse_aws_credentials(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((akid, secret)) if !akid.is_empty() && !secret.is_empty() => {
            Ok((akid.to_string(), secret.to_string()))
        }
        _ => Err("expected ACCESS_KEY_ID:SECRET_ACCESS_KEY".to_string()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let state = MockState::new();
    state.set_require_key(args.require_key);
    state.set_aws_credentials(args.aws_credentials);
    let server = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read_to_string(cert)?;
            let key = std::fs::read_to_string(key)?;
            MockServer::bind_tls(args.listen, state, &cert, &key).await?
        }
        _ => MockServer::bind(args.listen, state).await?,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock-upstream listening on {}", server.base_url())?;
        out.flush()?;
    }
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    Ok(())
}
