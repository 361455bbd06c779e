//! Shared test helpers: the real default models, resolved (and fetched with pip when missing) into
//! `$SWITCHYARD_HOME` or `~/.local/share/switchyard`.
#![allow(dead_code, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use engine::source;

fn resolve_once(cell: &'static OnceLock<PathBuf>, src: &str) -> PathBuf {
    cell.get_or_init(|| {
        let home = source::default_home();
        source::resolve(src, &home, &mut |_| {})
            .unwrap_or_else(|e| panic!("cannot resolve {src} into {}: {e}", home.display()))
    })
    .clone()
}

pub fn smollm() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    resolve_once(&CELL, source::DEFAULT_CHAT)
}

pub fn gemma() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    resolve_once(&CELL, source::DEFAULT_COMPLETION)
}

pub fn minilm() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    resolve_once(&CELL, source::DEFAULT_EMBEDDING)
}

/// Model tests run one at a time: they share two cores, and some measure latency.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
