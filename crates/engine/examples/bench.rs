//! Runs the engine benchmark on GGUF files:
//! `cargo run --release -p engine --example bench -- [--threads N] [--flash-attn on|off] MODEL.gguf...`
//! (`chat`, `completion` resolve the default models from `$SWITCHYARD_HOME`.)

use std::process::ExitCode;

use engine::bench::{self, BenchOpts};
use engine::source;

fn main() -> ExitCode {
    let mut threads = 2;
    let mut flash = None;
    let mut batch = 512;
    let mut models = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).unwrap_or(512),
            "--flash-attn" => flash = args.next().map(|v| v == "on"),
            "chat" => models.push(source::DEFAULT_CHAT.to_owned()),
            "completion" => models.push(source::DEFAULT_COMPLETION.to_owned()),
            other => models.push(other.to_owned()),
        }
    }
    let home = source::default_home();
    for m in models {
        let path = match source::resolve(&m, &home, &mut |_| {}) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{m}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut opts = BenchOpts::new(path);
        opts.threads = threads;
        opts.flash_attention = flash;
        opts.batch_size = batch;
        match bench::run(opts) {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("{m}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
