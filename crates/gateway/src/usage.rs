//! The usage log: one row per request (success, error or refusal).
//!
//! The request path appends the row to this process's journal file (one small `write`, no database,
//! no waiting) and goes on. A background writer inserts the rows in batches and truncates the journal
//! once everything in it is stored. The writer takes the rows from memory, where the request path also
//! leaves them (a bounded queue); it reads the journal back only for what the queue let go (a
//! database down for long) and for the journals of dead processes. So:
//! - a database that is slow or down never slows a request, and memory stays bounded: rows wait on
//!   disk, not in a queue, and are written when the database is back;
//! - a crash (even `kill -9`) loses nothing that was answered: the next process to start finds the
//!   journal of the dead one (its lock is gone) and replays it;
//! - nothing is written twice: every row has an id made here, and inserts skip ids already stored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::store::{Backend, Store, db_error};

/// One request, as logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    pub id: String,
    pub request_id: String,
    /// Unix milliseconds.
    pub ts: i64,
    pub key_id: Option<String>,
    pub surface: String,
    pub model: String,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub status: u16,
    pub error_kind: Option<String>,
}

impl UsageRow {
    /// The row as `serde_json` writes it (the journal's line), written by hand: see [`crate::json_out`].
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = crate::json_out::Obj::new(out);
        o.str("id", &self.id);
        o.str("request_id", &self.request_id);
        o.i64("ts", self.ts);
        o.opt_str("key_id", self.key_id.as_deref());
        o.str("surface", &self.surface);
        o.str("model", &self.model);
        o.opt_str("provider", self.provider.as_deref());
        o.opt_str("upstream_model", self.upstream_model.as_deref());
        o.u64("input_tokens", self.input_tokens);
        o.u64("output_tokens", self.output_tokens);
        o.u64("cached_tokens", self.cached_tokens);
        o.opt_f64("cost_usd", self.cost_usd);
        o.u64("latency_ms", self.latency_ms);
        o.opt_u64("ttft_ms", self.ttft_ms);
        o.u64("status", u64::from(self.status));
        o.opt_str("error_kind", self.error_kind.as_deref());
        o.end();
    }

    fn texts(&self) -> impl Iterator<Item = &String> {
        [&self.id, &self.request_id, &self.surface, &self.model]
            .into_iter()
            .chain(&self.key_id)
            .chain(&self.provider)
            .chain(&self.upstream_model)
            .chain(&self.error_kind)
    }

    fn has_nul(&self) -> bool {
        self.texts().any(|t| t.contains('\0'))
    }

    /// The row with every NUL in its text replaced by U+FFFD.
    fn without_nul(&self) -> UsageRow {
        let c = |s: &String| s.replace('\0', "\u{fffd}");
        let o = |s: &Option<String>| s.as_ref().map(c);
        UsageRow {
            id: c(&self.id),
            request_id: c(&self.request_id),
            key_id: o(&self.key_id),
            surface: c(&self.surface),
            model: c(&self.model),
            provider: o(&self.provider),
            upstream_model: o(&self.upstream_model),
            error_kind: o(&self.error_kind),
            ..self.clone()
        }
    }
}

const COLUMNS: &str = "id, request_id, ts, key_id, surface, model, provider, upstream_model, \
     input_tokens, output_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, status, error_kind";
/// Rows per insert.
const BATCH: usize = 500;
/// How long the writer waits after the first new row before it stores what came.
const BATCH_PAUSE: Duration = Duration::from_millis(100);
/// How much of the journal is read at once.
const READ_CHUNK: usize = 1 << 20;
/// Rows kept in memory for the writer (about a megabyte): past this, the oldest are let go, and the
/// writer reads them back from the journal.
const MEMORY_ROWS: usize = 4096;

/// A fresh id for a usage row: the time in milliseconds, then 80 random bits (32 hex digits in all).
/// Ids made in time order land at the right edge of the primary-key index, so a batch touches a few
/// pages; random ids scattered every insert over the whole index (a page read and a page written to
/// the WAL per row, once the table outgrew the cache).
pub fn new_id() -> String {
    let ms = crate::store::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    let mut id = String::with_capacity(34);
    id.push_str("u_");
    push_hex(&mut id, u128::from(ms), 12);
    push_hex(&mut id, random, 20);
    id
}

/// Appends the low `digits` hex digits of `v`, zero-padded: what `format!("{v:0digits$x}")` writes for a
/// value that fits, without the formatting machinery (ids are made on every request).
pub(crate) fn push_hex(out: &mut String, v: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (4 * i)) & 0xf) as usize]));
    }
}

struct Journal {
    file: File,
    /// Bytes appended since the last truncation.
    len: u64,
    /// The last rows journaled, each with the length of its line: exactly the lines from `mem_start`
    /// to `len` when not empty. The writer takes them from here instead of reading and parsing the
    /// journal again.
    rows: std::collections::VecDeque<(u32, UsageRow)>,
    /// Where the line of `rows[0]` starts in the journal.
    mem_start: u64,
}

/// A journal's batch of rows, ready to insert (see [`Layout`]).
enum Batch {
    /// One JSON array of the rows, decoded by the database itself with one statement.
    Json { json: String, rows: usize },
    /// The rows, bound as parameters.
    Rows(Vec<UsageRow>),
}

impl Batch {
    /// Rows taken from memory, in the store's layout.
    fn of_rows(rows: Vec<UsageRow>, layout: Layout) -> Result<Batch> {
        Ok(match layout {
            Layout::Rows => Batch::Rows(rows),
            Layout::Objects => Batch::Json {
                rows: rows.len(),
                // The same objects as the journal's lines.
                json: serde_json::to_string(&rows)
                    .map_err(|e| Error::internal(format!("could not encode usage rows: {e}")))?,
            },
        })
    }

    fn rows(&self) -> usize {
        match self {
            Batch::Json { rows, .. } => *rows,
            Batch::Rows(r) => r.len(),
        }
    }
}

/// What the writer does next (see [`UsageLog::take_from_memory`]).
enum Taken {
    /// These rows, which took this many bytes of the journal.
    Rows(Vec<UsageRow>, u64),
    /// Read the journal up to here.
    ReadUpTo(u64),
}

/// Where the writer stands.
struct Cursor {
    offset: u64,
    /// One connection kept for the writer: on SQLite its page cache then stays valid from one batch to
    /// the next (a pooled connection's cache is thrown away whenever another connection has written),
    /// so a batch reads no page back from the disk. Dropped on an error, taken again for the next try.
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

struct Inner {
    store: Store,
    dir: PathBuf,
    path: PathBuf,
    journal: Mutex<Journal>,
    /// A second handle on this process's journal, for reading it back. It stays open: closing a handle
    /// on a file that was truncated to zero makes ext4 write the file's pages out then and there, on
    /// the thread that closes it (a runtime worker).
    reader: File,
    wake: Notify,
    /// How far into the journal rows are stored, and the writer's own connection; held while draining.
    cursor: tokio::sync::Mutex<Cursor>,
    /// Rows that could not even be journaled (disk full): counted, and said loudly.
    lost: std::sync::atomic::AtomicU64,
}

/// The usage log of this process.
#[derive(Clone)]
pub struct UsageLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UsageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLog")
            .field("journal", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl UsageLog {
    /// Opens this process's journal in `dir` (locked, so that no other process replays it while this
    /// one lives).
    pub fn open(store: Store, dir: &Path) -> Result<UsageLog> {
        std::fs::create_dir_all(dir).map_err(|e| journal_error(dir, e))?;
        let path = dir.join(format!(
            "usage-{}-{:08x}.jsonl",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| journal_error(&path, e))?;
        file.try_lock()
            .map_err(|e| journal_error(&path, std::io::Error::other(e.to_string())))?;
        let reader = file.try_clone().map_err(|e| journal_error(&path, e))?;
        Ok(UsageLog {
            inner: Arc::new(Inner {
                store,
                dir: dir.to_path_buf(),
                path,
                journal: Mutex::new(Journal {
                    file,
                    len: 0,
                    rows: Default::default(),
                    mem_start: 0,
                }),
                reader,
                wake: Notify::new(),
                cursor: tokio::sync::Mutex::new(Cursor {
                    offset: 0,
                    conn: None,
                }),
                lost: Default::default(),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Logs one row: appended to the journal now, stored in the database soon.
    pub fn record(&self, row: UsageRow) {
        // A NUL can come in with a request (a model name); no database column takes one (Postgres
        // refuses the whole batch).
        let row = if row.has_nul() { row.without_nul() } else { row };
        let mut line = Vec::with_capacity(512);
        row.write_json(&mut line);
        crate::json_out::debug_check(&line, &row, "usage row");
        line.push(b'\n');
        {
            let mut j = self.inner.journal.lock();
            match j.file.write_all(&line) {
                Ok(()) => {
                    let start = j.len;
                    j.len += line.len() as u64;
                    if j.rows.len() >= MEMORY_ROWS {
                        // The writer is far behind (the database is down or slow): it reads these back
                        // from the journal when it gets to them.
                        j.rows.clear();
                    }
                    if j.rows.is_empty() {
                        j.mem_start = start;
                    }
                    j.rows.push_back((line.len() as u32, row));
                }
                Err(e) => {
                    // A part of the line may be in the file: from here the writer reads the journal.
                    j.rows.clear();
                    self.inner.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(
                        "could not journal a usage row ({}): {e}",
                        self.inner.path.display()
                    );
                    return;
                }
            }
        }
        self.inner.wake.notify_one();
    }

    /// Writes journaled rows to the database until dropped; replays the journals that dead processes
    /// left behind.
    pub async fn run_writer(&self) {
        let mut backoff = Duration::from_millis(200);
        let mut orphans_checked = None::<std::time::Instant>;
        loop {
            if orphans_checked.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                self.replay_orphans().await;
                orphans_checked = Some(std::time::Instant::now());
            }
            let drained = self.drain().await;
            metrics::gauge!(crate::telemetry::USAGE_PENDING_BYTES).set(self.pending_bytes() as f64);
            match drained {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(
                        "usage rows wait in {} (database: {e}); retrying in {:?}",
                        self.inner.path.display(),
                        backoff
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            // Wait for new rows (a pause first, so that a busy second makes a few large batches: each
            // commit costs the database the same pages, whatever the rows in it).
            tokio::select! {
                () = self.inner.wake.notified() => tokio::time::sleep(BATCH_PAUSE).await,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Stores everything journaled past `offset`, then truncates the journal if nothing new came.
    async fn drain(&self) -> Result<()> {
        let mut cursor = self.inner.cursor.lock().await;
        let Cursor { offset, conn } = &mut *cursor;
        loop {
            let end = self.inner.journal.lock().len;
            if *offset >= end {
                break;
            }
            let layout = Layout::of(&self.inner.store);
            match self.take_from_memory(*offset) {
                Taken::Rows(rows, bytes) => {
                    // If the insert fails, these rows are still in the journal: the next try reads
                    // them back from there (they are no longer in memory, and `offset` stays).
                    insert_on(&self.inner.store, conn, Batch::of_rows(rows, layout)?).await?;
                    *offset += bytes;
                }
                Taken::ReadUpTo(to) => {
                    let (from, inner) = (*offset, self.inner.clone());
                    // Reading and parsing up to a megabyte of lines is no work for a runtime thread.
                    let read = tokio::task::spawn_blocking(move || {
                        read_batches(&inner.reader, &inner.path, from, to.min(end), layout)
                    })
                    .await
                    .map_err(|e| Error::internal(format!("usage journal reader: {e}")))?;
                    let (batches, consumed) = read?;
                    for b in batches {
                        insert_on(&self.inner.store, conn, b).await?;
                    }
                    *offset += consumed;
                    if consumed == 0 {
                        break;
                    }
                }
            }
        }
        let mut j = self.inner.journal.lock();
        if *offset > 0 && *offset == j.len {
            // Everything journaled is stored: start the file over. (Rows still in memory, if any,
            // were stored from the file.)
            j.file
                .set_len(0)
                .map_err(|e| journal_error(&self.inner.path, e))?;
            j.len = 0;
            j.rows.clear();
            j.mem_start = 0;
            *offset = 0;
        }
        Ok(())
    }

    /// The next batch for the writer, whose stored rows end at `offset`: from memory when the rows in
    /// memory start there; otherwise how far to read the journal (up to where memory takes over).
    fn take_from_memory(&self, offset: u64) -> Taken {
        let mut j = self.inner.journal.lock();
        // Rows already stored from the journal (read back while they were still in memory).
        while j.mem_start < offset {
            let Some((len, _)) = j.rows.pop_front() else {
                break;
            };
            j.mem_start += u64::from(len);
        }
        if j.rows.is_empty() {
            return Taken::ReadUpTo(j.len);
        }
        if j.mem_start > offset {
            return Taken::ReadUpTo(j.mem_start);
        }
        let n = j.rows.len().min(BATCH);
        let mut bytes = 0u64;
        let rows: Vec<UsageRow> = j
            .rows
            .drain(..n)
            .map(|(len, row)| {
                bytes += u64::from(len);
                row
            })
            .collect();
        j.mem_start += bytes;
        Taken::Rows(rows, bytes)
    }

    /// Stores what is journaled, waiting at most `within` (on shutdown).
    pub async fn flush(&self, within: Duration) {
        match tokio::time::timeout(within, self.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("usage rows left in the journal for the next start: {e}"),
            Err(_) => tracing::warn!("usage rows left in the journal for the next start: timeout"),
        }
    }

    /// Replays and removes the journals of processes that are gone (their lock is free).
    async fn replay_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_journal = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("usage-") && n.ends_with(".jsonl"));
            if !is_journal || path == self.inner.path {
                continue;
            }
            let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue; // a live process owns it
            }
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            match read_all_batches(&f, &path, len, Layout::of(&self.inner.store)) {
                Ok(batches) => {
                    let mut ok = true;
                    let rows: usize = batches.iter().map(Batch::rows).sum();
                    for b in batches {
                        if let Err(e) = insert(&self.inner.store, b).await {
                            tracing::warn!("replaying {}: {e}; will retry", path.display());
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        tracing::info!(rows, "replayed the usage journal {}", path.display());
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Err(e) => tracing::warn!("cannot read {}: {e}", path.display()),
            }
        }
    }

    /// Rows not yet in the database (in this process's journal).
    pub fn pending_bytes(&self) -> u64 {
        self.inner.journal.lock().len
    }
}

fn journal_error(p: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("usage journal {}: {e}", p.display()))
}

/// The complete lines of the journal between `from` and `to` (at most [`READ_CHUNK`] bytes), read
/// through `file` at that position, as batches of at most [`BATCH`] rows; and how many bytes they took.
fn read_batches(file: &File, path: &Path, from: u64, to: u64, layout: Layout) -> Result<(Vec<Batch>, u64)> {
    use std::os::unix::fs::FileExt as _;
    let want = (to - from).min(READ_CHUNK as u64) as usize;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(journal_error(path, e)),
        }
    }
    buf.truncate(got);
    let complete = match memchr::memrchr(b'\n', &buf) {
        Some(i) => i + 1,
        None if got == want && want == READ_CHUNK => {
            return Err(Error::internal("usage journal: a line longer than 1 MiB"));
        }
        None => 0,
    };
    Ok((batches_of(&buf[..complete], layout), complete as u64))
}

/// A whole journal (a dead process's), as batches.
fn read_all_batches(file: &File, path: &Path, len: u64, layout: Layout) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let (batches, consumed) = read_batches(file, path, at, len, layout)?;
        out.extend(batches);
        if consumed == 0 {
            break; // a torn last line
        }
        at += consumed;
    }
    Ok(out)
}

/// A journal line, as far as checking it goes: every field a row needs, of its type, read in place
/// (nothing is allocated for a string without escapes). A line that does not pass is skipped, so one
/// torn line can never hold up the rows after it. Its fields are read by nothing but the check.
#[derive(Deserialize)]
#[allow(dead_code)]
struct LineCheck<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    request_id: std::borrow::Cow<'a, str>,
    ts: i64,
    #[serde(borrow)]
    key_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    surface: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    provider: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    upstream_model: Option<std::borrow::Cow<'a, str>>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_usd: Option<f64>,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    status: u16,
    #[serde(borrow)]
    error_kind: Option<std::borrow::Cow<'a, str>>,
}

/// How a batch carries its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One JSON array of the journal's lines as they are, objects (Postgres: `jsonb_to_recordset`
    /// names the columns; one parameter whatever the batch's size).
    Objects,
    /// The rows decoded here and bound as parameters (SQLite: reading sixteen values back out of a
    /// JSON array, even SQLite's binary JSON, cost its writer 24,000 instructions a row under
    /// callgrind, more than the insert itself).
    Rows,
}

impl Layout {
    fn of(store: &Store) -> Layout {
        match store.backend {
            Backend::Sqlite => Layout::Rows,
            Backend::Postgres => Layout::Objects,
        }
    }
}

/// Complete journal lines as batches of at most [`BATCH`] rows.
fn batches_of(lines: &[u8], layout: Layout) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut json = String::new();
    let mut rows = Vec::new();
    let mut in_json = 0;
    for line in lines.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        // A torn line (the process died mid-write) is skipped, not retried forever. Lines that pass
        // are valid UTF-8 (serde_json checks every string) and nothing but JSON, so as objects they
        // go in as they are.
        let ok = match layout {
            Layout::Objects => match std::str::from_utf8(line) {
                Ok(text) if serde_json::from_str::<LineCheck>(text).is_ok() => {
                    if in_json == 0 {
                        json.reserve(lines.len().min(READ_CHUNK) + 2);
                        json.push('[');
                    } else {
                        json.push(',');
                    }
                    json.push_str(text);
                    in_json += 1;
                    if in_json == BATCH {
                        json.push(']');
                        out.push(Batch::Json {
                            json: std::mem::take(&mut json),
                            rows: in_json,
                        });
                        in_json = 0;
                    }
                    true
                }
                _ => false,
            },
            Layout::Rows => match serde_json::from_slice::<UsageRow>(line) {
                Ok(row) => {
                    if rows.is_empty() {
                        rows.reserve_exact(BATCH);
                    }
                    rows.push(row);
                    if rows.len() == BATCH {
                        out.push(Batch::Rows(std::mem::take(&mut rows)));
                    }
                    true
                }
                Err(_) => false,
            },
        };
        if !ok {
            tracing::warn!("skipping a bad usage journal line");
        }
    }
    if in_json > 0 {
        json.push(']');
        out.push(Batch::Json { json, rows: in_json });
    }
    if !rows.is_empty() {
        out.push(Batch::Rows(rows));
    }
    out
}

/// The row counts of SQLite's inserts, largest first: a batch goes in as few statements of these sizes
/// as add up to it (one transaction). Fixed sizes keep each connection's statement cache to three
/// entries; 64 rows are 1,024 parameters, well under SQLite's limit of 32,766.
const SQLITE_SHAPES: [usize; 3] = [64, 8, 1];
const COLUMN_COUNT: usize = 16;

/// The insert of `rows` rows on SQLite, one parameter per value, in [`COLUMNS`] order. The parameters
/// are anonymous (`?`), not numbered like the other queries' (`$N`): binding looks each numbered one's
/// name up in a list as long as the statement's parameters (`sqlite3_bind_parameter_name`), which made
/// binding a 64-row statement cost more than its insert.
fn sqlite_insert(rows: usize) -> String {
    let mut sql = format!("INSERT INTO usage_log ({COLUMNS}) VALUES ");
    let values = format!("({})", ["?"; COLUMN_COUNT].join(", "));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&values);
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// [`sqlite_insert`] for each of [`SQLITE_SHAPES`], made once.
static SQLITE_INSERTS: std::sync::LazyLock<[String; 3]> =
    std::sync::LazyLock::new(|| SQLITE_SHAPES.map(sqlite_insert));

/// `row`'s values bound to `q`, in [`COLUMNS`] order. The counts are stored as SQLite's (signed)
/// integers; one past `i64::MAX` cannot come from a real request, and is stored as `i64::MAX`.
fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    row: UsageRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    q.bind(row.id)
        .bind(row.request_id)
        .bind(row.ts)
        .bind(row.key_id)
        .bind(row.surface)
        .bind(row.model)
        .bind(row.provider)
        .bind(row.upstream_model)
        .bind(int(row.input_tokens))
        .bind(int(row.output_tokens))
        .bind(int(row.cached_tokens))
        .bind(row.cost_usd)
        .bind(int(row.latency_ms))
        .bind(row.ttft_ms.map(int))
        .bind(i32::from(row.status))
        .bind(row.error_kind)
}

/// Inserts SQLite rows as a few multi-row statements ([`SQLITE_SHAPES`]), in one transaction when it
/// takes more than one.
async fn insert_rows(conn: &mut sqlx::AnyConnection, rows: Vec<UsageRow>) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let mut left = rows.len();
    let mut rows = rows.into_iter();
    let next = |left: usize| {
        SQLITE_SHAPES
            .iter()
            .zip(SQLITE_INSERTS.iter())
            .find(|(size, _)| **size <= left)
            .map(|(size, sql)| (*size, sql.as_str()))
    };
    let one = |size: usize, sql: &'static str, rows: &mut std::vec::IntoIter<UsageRow>| {
        rows.by_ref().take(size).fold(sqlx::query(sql), bind_row)
    };
    match next(left) {
        None => Ok(()),
        Some((size, sql)) if size == left => {
            one(size, sql, &mut rows).execute(conn).await?;
            Ok(())
        }
        Some(_) => {
            let mut tx = conn.begin().await?;
            while let Some((size, sql)) = next(left) {
                one(size, sql, &mut rows).execute(&mut *tx).await?;
                left -= size;
            }
            tx.commit().await
        }
    }
}

/// The insert of a batch on Postgres: the database walks the array of rows itself
/// (`jsonb_to_recordset`). One statement whatever the batch's size, so it is prepared once per
/// connection and stays cached.
const INSERT_POSTGRES: &str = "INSERT INTO usage_log (id, request_id, ts, key_id, surface, model, provider, \
     upstream_model, input_tokens, output_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, status, \
     error_kind) SELECT id, request_id, ts, key_id, surface, model, provider, upstream_model, input_tokens, \
     output_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, status, error_kind \
     FROM jsonb_to_recordset($1::jsonb) AS r(id TEXT, request_id TEXT, ts BIGINT, key_id TEXT, \
     surface TEXT, model TEXT, provider TEXT, upstream_model TEXT, input_tokens BIGINT, \
     output_tokens BIGINT, cached_tokens BIGINT, cost_usd DOUBLE PRECISION, latency_ms BIGINT, \
     ttft_ms BIGINT, status BIGINT, error_kind TEXT) ON CONFLICT (id) DO NOTHING";

/// Inserts a batch on `conn`, skipping ids already stored.
async fn insert_batch(conn: &mut sqlx::AnyConnection, batch: Batch) -> sqlx::Result<()> {
    match batch {
        Batch::Json { json, .. } => {
            sqlx::query(INSERT_POSTGRES).bind(json).execute(conn).await?;
            Ok(())
        }
        Batch::Rows(rows) => insert_rows(conn, rows).await,
    }
}

/// Inserts a batch on a connection from the pool.
async fn insert(store: &Store, batch: Batch) -> Result<()> {
    let mut conn = store.pool.acquire().await.map_err(db_error)?;
    insert_batch(&mut conn, batch).await.map_err(db_error)
}

/// [`insert`] on the writer's own connection (taken from the pool when it has none).
async fn insert_on(
    store: &Store,
    conn: &mut Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    batch: Batch,
) -> Result<()> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(store.pool.acquire().await.map_err(db_error)?),
    };
    match insert_batch(c, batch).await {
        Ok(()) => Ok(()),
        Err(e) => {
            *conn = None;
            Err(db_error(e))
        }
    }
}

/// `GET /admin/usage` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub key: Option<String>,
    pub model: Option<String>,
    /// Unix seconds, or an RFC 3339 date (`2026-11-01` or `2026-11-01T00:00:00Z`).
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
    pub limit: Option<u32>,
}

/// Reads a time bound: unix seconds, or a UTC date / date-time.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n * 1000);
    }
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let mut t = time.splitn(3, ':').map(|p| p.parse::<f64>().ok());
    let (hh, mm, ss) = (
        t.next().flatten().unwrap_or(0.0),
        t.next().flatten().unwrap_or(0.0),
        t.next().flatten().unwrap_or(0.0),
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return None;
    }
    let days = crate::limits::days_from_civil(y, m as u32, dd as u32);
    Some(days * 86_400_000 + ((hh * 3600.0 + mm * 60.0 + ss) * 1000.0) as i64)
}

/// Rows, or groups, of the usage log.
pub async fn query(store: &Store, q: &UsageQuery) -> Result<Vec<serde_json::Value>> {
    let mut filters = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    if let Some(k) = &q.key {
        args.push(Arg::S(k.clone()));
        filters.push(format!("key_id = ${}", args.len()));
    }
    if let Some(m) = &q.model {
        args.push(Arg::S(m.clone()));
        filters.push(format!("model = ${}", args.len()));
    }
    for (v, op, name) in [(&q.from, ">=", "from"), (&q.to, "<", "to")] {
        if let Some(v) = v {
            let t = parse_time(v).ok_or_else(|| {
                Error::invalid_param(
                    name,
                    format!("'{name}' must be unix seconds or a date like 2026-11-01"),
                )
            })?;
            args.push(Arg::I(t));
            filters.push(format!("ts {op} ${}", args.len()));
        }
    }
    let wh = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let group = match q.group_by.as_deref() {
        None => None,
        Some("day") => Some("(ts / 86400000)"),
        Some("model") => Some("model"),
        Some("key") => Some("key_id"),
        Some("provider") => Some("provider"),
        Some(_) => {
            return Err(Error::invalid_param(
                "group_by",
                "'group_by' must be one of day, model, key, provider",
            ));
        }
    };
    let sql = match group {
        None => format!("SELECT {COLUMNS} FROM usage_log{wh} ORDER BY ts DESC, id LIMIT {limit}"),
        Some(g) => format!(
            "SELECT {g} AS grp, COUNT(*) AS requests, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             SUM(cost_usd) AS cost_usd, CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors \
             FROM usage_log{wh} GROUP BY {g} ORDER BY {g} LIMIT {limit}"
        ),
    };
    // Built from fixed fragments and placeholders only; every value is bound.
    let mut qq = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        qq = match a {
            Arg::S(s) => qq.bind(s),
            Arg::I(i) => qq.bind(i),
        };
    }
    let rows = qq.fetch_all(&store.pool).await.map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let v = match q.group_by.as_deref() {
            None => serde_json::to_value(row_of(r)?).map_err(|e| Error::internal(e.to_string()))?,
            Some(g) => {
                let key = if g == "day" {
                    let day: i64 = r.try_get("grp").map_err(db_error)?;
                    serde_json::json!(crate::limits::civil_date(day))
                } else {
                    serde_json::json!(r.try_get::<Option<String>, _>("grp").map_err(db_error)?)
                };
                serde_json::json!({
                    g: key,
                    "requests": r.try_get::<i64, _>("requests").map_err(db_error)?,
                    "input_tokens": r.try_get::<Option<i64>, _>("input_tokens").map_err(db_error)?.unwrap_or(0),
                    "output_tokens": r.try_get::<Option<i64>, _>("output_tokens").map_err(db_error)?.unwrap_or(0),
                    "cached_tokens": r.try_get::<Option<i64>, _>("cached_tokens").map_err(db_error)?.unwrap_or(0),
                    "cost_usd": r.try_get::<Option<f64>, _>("cost_usd").map_err(db_error)?.unwrap_or(0.0),
                    "errors": r.try_get::<Option<i64>, _>("errors").map_err(db_error)?.unwrap_or(0),
                })
            }
        };
        out.push(v);
    }
    Ok(out)
}

enum Arg {
    S(String),
    I(i64),
}

fn row_of(r: &sqlx::any::AnyRow) -> Result<UsageRow> {
    let u = |k: &str| -> Result<u64> {
        Ok(u64::try_from(r.try_get::<i64, _>(k).map_err(db_error)?).unwrap_or(0))
    };
    Ok(UsageRow {
        id: r.try_get("id").map_err(db_error)?,
        request_id: r.try_get("request_id").map_err(db_error)?,
        ts: r.try_get("ts").map_err(db_error)?,
        key_id: r.try_get("key_id").map_err(db_error)?,
        surface: r.try_get("surface").map_err(db_error)?,
        model: r.try_get("model").map_err(db_error)?,
        provider: r.try_get("provider").map_err(db_error)?,
        upstream_model: r.try_get("upstream_model").map_err(db_error)?,
        input_tokens: u("input_tokens")?,
        output_tokens: u("output_tokens")?,
        cached_tokens: u("cached_tokens")?,
        cost_usd: r.try_get("cost_usd").map_err(db_error)?,
        latency_ms: u("latency_ms")?,
        ttft_ms: r
            .try_get::<Option<i64>, _>("ttft_ms")
            .map_err(db_error)?
            .and_then(|v| u64::try_from(v).ok()),
        status: u16::try_from(r.try_get::<i64, _>("status").map_err(db_error)?).unwrap_or(0),
        error_kind: r.try_get("error_kind").map_err(db_error)?,
    })
}

/// What a key has spent since `since_ms` (for budgets, when no shared counter has it yet).
pub async fn spend_since(store: &Store, key_id: &str, since_ms: i64) -> Result<f64> {
    let r = sqlx::query("SELECT SUM(cost_usd) AS s FROM usage_log WHERE key_id = $1 AND ts >= $2")
        .bind(key_id.to_string())
        .bind(since_ms)
        .fetch_one(&store.pool)
        .await
        .map_err(db_error)?;
    Ok(r.try_get::<Option<f64>, _>("s").map_err(db_error)?.unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("2026-11-23T06:00:00Z"), Some(1_795_413_600_000));
        assert_eq!(parse_time("nope"), None);
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for (v, digits) in [
            (0u128, 12),
            (0xabc, 12),
            (u128::MAX, 32),
            (1 << 79, 20),
            (0x0123_4567_89ab_cdef, 20),
        ] {
            let mut s = String::new();
            push_hex(&mut s, v, digits);
            assert_eq!(s, format!("{v:0w$x}", w = digits as usize), "{v:x}");
        }
    }

    #[test]
    fn ids_are_unique_and_in_time_order() {
        let a = new_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_id();
        assert_eq!(a.len(), 34, "{a}");
        assert!(a.starts_with("u_") && a[2..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "{a} then {b}: not in time order");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(many.len(), 10_000);
    }

    /// A usage log on a fresh SQLite store in a folder of its own.
    async fn temp_log() -> (PathBuf, Store, UsageLog) {
        let dir = std::env::temp_dir().join(format!("sy-usage-{:x}", rand::random::<u64>()));
        let store = Store::open(&crate::store::sqlite_url(&dir.join("db.sqlite")))
            .await
            .unwrap();
        let log = UsageLog::open(store.clone(), &dir.join("journal")).unwrap();
        (dir, store, log)
    }

    /// Every stored row, in id order, read back column by column.
    async fn stored_rows(store: &Store) -> Vec<UsageRow> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM usage_log ORDER BY id"
        )))
        .fetch_all(&store.pool)
        .await
        .unwrap();
        rows.iter().map(|r| row_of(r).unwrap()).collect()
    }

    #[tokio::test]
    async fn rows_survive_the_journal_and_are_written_once() {
        let (dir, store, log) = temp_log().await;
        let row = |i: u32| UsageRow {
            id: format!("u_{i}"),
            request_id: format!("req_{i}"),
            ts: 1000,
            key_id: Some("k".into()),
            surface: "/v1/chat/completions".into(),
            model: "m".into(),
            provider: Some("p".into()),
            upstream_model: None,
            input_tokens: 3,
            output_tokens: 4,
            cached_tokens: 0,
            cost_usd: Some(0.5),
            latency_ms: 7,
            ttft_ms: Some(2),
            status: 200,
            error_kind: None,
        };
        for i in 0..3 {
            log.record(row(i));
        }
        log.drain().await.unwrap();
        assert_eq!(log.pending_bytes(), 0);
        // The same row again (a replay) is not written twice.
        log.record(row(1));
        log.drain().await.unwrap();
        let got = query(&store, &UsageQuery::default()).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(spend_since(&store, "k", 0).await.unwrap(), 1.5);
        let g = query(
            &store,
            &UsageQuery {
                group_by: Some("key".into()),
                ..UsageQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(g[0]["requests"], 3);
        assert_eq!(g[0]["output_tokens"], 12);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch of any size goes in whole, over statements of every shape (577 rows: a full batch of
    /// 500 as 7 x 64 + 6 x 8 + 4 x 1, then 77 as 64 + 8 + 5 x 1), each row once, and again only once
    /// when the same rows are journaled a second time (a replay).
    #[tokio::test]
    async fn batches_of_any_size_are_stored_once() {
        let (dir, store, log) = temp_log().await;
        let row = |i: u64| UsageRow {
            id: format!("u_{i:04}"),
            request_id: format!("req_{i}"),
            ts: 1000 + i as i64,
            key_id: i.is_multiple_of(2).then(|| "k".into()),
            surface: "chat_completions".into(),
            model: format!("m{}", i % 7),
            provider: Some("p".into()),
            upstream_model: None,
            input_tokens: i,
            output_tokens: 2 * i,
            cached_tokens: 0,
            cost_usd: Some(0.25),
            latency_ms: 3,
            ttft_ms: i.is_multiple_of(3).then_some(i),
            status: 200,
            error_kind: None,
        };
        let n = 577;
        for round in 0..2 {
            for i in 0..n {
                log.record(row(i));
            }
            log.drain().await.unwrap();
            assert_eq!(log.pending_bytes(), 0, "round {round}");
        }
        let got = stored_rows(&store).await;
        let want: Vec<UsageRow> = (0..n).map(row).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the rows read back differ from the rows recorded");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every column of a row, escapes and nulls included, reads back as it was recorded.
    #[tokio::test]
    async fn every_column_is_stored_as_it_was_recorded() {
        let (dir, store, log) = temp_log().await;
        let full = UsageRow {
            id: "u_full".into(),
            request_id: "req_\"quoted\" \\ é 🚀".into(),
            ts: 1_764_000_000_123,
            key_id: Some("key_1".into()),
            surface: "messages".into(),
            model: "claude\nline".into(),
            provider: Some("anthropic-main".into()),
            upstream_model: Some("claude-x".into()),
            input_tokens: 11,
            output_tokens: 22,
            cached_tokens: 33,
            cost_usd: Some(0.000_123_456_789),
            latency_ms: 44,
            ttft_ms: Some(55),
            status: 529,
            error_kind: Some("upstream".into()),
        };
        let sparse = UsageRow {
            id: "u_sparse".into(),
            request_id: "req_2".into(),
            ts: 1,
            key_id: None,
            surface: "chat_completions".into(),
            model: "m".into(),
            provider: None,
            upstream_model: None,
            input_tokens: u64::from(u32::MAX) * 4,
            output_tokens: 0,
            cached_tokens: 0,
            cost_usd: None,
            latency_ms: 0,
            ttft_ms: None,
            status: 200,
            error_kind: None,
        };
        log.record(full.clone());
        log.record(sparse.clone());
        log.drain().await.unwrap();
        let got = stored_rows(&store).await;
        assert_eq!(got, [full, sparse]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A journal line that is not a whole row (torn by a crash, or garbage) is skipped; the rows around
    /// it in the same batch are stored, and a NUL in a row's text does not reach the database.
    #[tokio::test]
    async fn bad_lines_are_skipped_and_nul_is_replaced() {
        let (dir, store, log) = temp_log().await;
        let row = |i: u32, model: &str| UsageRow {
            id: format!("u_{i}"),
            request_id: format!("req_{i}"),
            ts: 1000 + i64::from(i),
            key_id: None,
            surface: "chat_completions".into(),
            model: model.into(),
            provider: None,
            upstream_model: None,
            input_tokens: 1,
            output_tokens: 2,
            cached_tokens: 0,
            cost_usd: None,
            latency_ms: 3,
            ttft_ms: None,
            status: 404,
            error_kind: Some("model_not_found".into()),
        };
        log.record(row(1, "m"));
        {
            let mut j = log.inner.journal.lock();
            let junk = b"{\"id\": \"u_torn\", \"request_\n[1, 2]\n{\"id\": \"u_2\"}\n";
            j.file.write_all(junk).unwrap();
            j.len += junk.len() as u64;
            // Lines in the journal that memory does not hold: the writer must read them from the file.
            j.rows.clear();
        }
        log.record(row(3, "a\0b"));
        log.drain().await.unwrap();
        assert_eq!(log.pending_bytes(), 0, "everything was read");
        let got = query(&store, &UsageQuery::default()).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["u_3", "u_1"], "{got:?}");
        assert_eq!(got[0]["model"], "a\u{fffd}b");
        assert_eq!(got[0]["ts"], 1003);
        assert_eq!(got[0]["cost_usd"], serde_json::Value::Null);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn numbered(i: usize) -> UsageRow {
        UsageRow {
            id: format!("u_{i:06}"),
            request_id: format!("req_{i}"),
            ts: 1000 + i as i64,
            key_id: Some("k".into()),
            surface: "chat_completions".into(),
            model: "m".into(),
            provider: Some("p".into()),
            upstream_model: None,
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cost_usd: None,
            latency_ms: 1,
            ttft_ms: None,
            status: 200,
            error_kind: None,
        }
    }

    /// More rows than memory keeps (the database away for a while): the ones memory let go are read
    /// back from the journal, the rest taken from memory, each stored once.
    #[tokio::test]
    async fn rows_memory_let_go_are_read_back_from_the_journal() {
        let (dir, store, log) = temp_log().await;
        let n = 2 * MEMORY_ROWS + 7;
        for i in 0..n {
            log.record(numbered(i));
        }
        assert!(log.inner.journal.lock().rows.len() < n, "memory is bounded");
        log.drain().await.unwrap();
        assert_eq!(log.pending_bytes(), 0);
        let got = stored_rows(&store).await;
        assert_eq!(got.len(), n);
        assert!(got.iter().zip(0..).all(|(r, i)| *r == numbered(i)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rows taken from memory whose insert fails are still in the journal: the next try stores them
    /// from there, once.
    #[tokio::test]
    async fn rows_of_a_failed_insert_are_stored_from_the_journal() {
        let (dir, store, log) = temp_log().await;
        for i in 0..10 {
            log.record(numbered(i));
        }
        sqlx::query("ALTER TABLE usage_log RENAME TO usage_log_away")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(log.drain().await.is_err());
        assert!(log.inner.journal.lock().rows.is_empty(), "taken from memory");
        sqlx::query("ALTER TABLE usage_log_away RENAME TO usage_log")
            .execute(&store.pool)
            .await
            .unwrap();
        for i in 10..12 {
            log.record(numbered(i));
        }
        log.drain().await.unwrap();
        assert_eq!(log.pending_bytes(), 0);
        let got = stored_rows(&store).await;
        assert_eq!(got, (0..12).map(numbered).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
