//! Helpers: a repository fixture, running the binary, comparing trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

/// A temporary directory with a repository in `repo/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A new, initialised repository (light KDF so the tests stay quick).
    pub fn new() -> Self {
        Self::init_with(&[])
    }

    /// A new repository with 1 MiB packs, so that files spread over several packs and
    /// forgetting a snapshot frees whole packs.
    pub fn small_packs() -> Self {
        Self::init_with(&["--pack-size", "1"])
    }

    /// A new repository, `init` given these options too.
    pub fn init_with(options: &[&str]) -> Self {
        let f = Self::empty();
        let mut args = vec!["init", "--kdf-memory", "8192", "--kdf-iterations", "1"];
        args.extend_from_slice(options);
        assert_ok(&f.run(&args));
        f
    }

    /// A temporary directory without a repository.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("cairn-e2e-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `cairn` command with the repository and password set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.args(args)
            .env("CAIRN_REPO", self.repo())
            .env("CAIRN_PASSWORD", PASSWORD)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_NEW_PASSWORD")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Writes `cairn.toml` naming service `app`, whose state is the directory `path` (item
    /// `item`); returns the file's path.
    pub fn tree_service(&self, item: &str, path: &Path) -> PathBuf {
        let config = self.path("cairn.toml");
        fs::write(
            &config,
            format!(
                "[service.app]\n[[service.app.state]]\nname = \"{item}\"\npath = \"{}\"\n",
                path.display()
            ),
        )
        .unwrap();
        config
    }

    /// Runs `cairn state ARGS` with the service file `config`.
    pub fn state(&self, config: &Path, args: &[&str]) -> Output {
        let mut all = vec!["state"];
        all.extend_from_slice(args);
        self.cmd(&all).env("CAIRN_CONFIG", config).output().unwrap()
    }

    /// Runs a backup and returns the new snapshot's id.
    pub fn backup(&self, args: &[&str]) -> String {
        let mut all = vec!["backup", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// Ids of all snapshots.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let out = self.run(&["snapshots", "--json"]);
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "cairn failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file below `dir` (bytes of its path relative to `dir` → its bytes).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Total bytes of regular files below `dir`, skipping `skip` (a top-level name).
pub fn du(dir: &Path, skip: &str) -> u64 {
    files_below(dir)
        .iter()
        .filter(|p| !p.strip_prefix(dir).unwrap().starts_with(skip))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// What a tree looks like, entry by entry: kind, mode, mtime, content or link target, and
/// which entries share an inode.
pub fn describe(dir: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(dir.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = dir.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                stack.push(r.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink -> {:?}", fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                let data = fs::read(&p).unwrap();
                let link = if md.nlink() > 1 {
                    let first = inodes
                        .entry(md.ino())
                        .or_insert_with(|| r.as_os_str().as_bytes().to_vec());
                    format!(" link-group {:?}", String::from_utf8_lossy(first))
                } else {
                    String::new()
                };
                format!(
                    "file {} bytes blake3 {}{link}",
                    data.len(),
                    blake3::hash(&data).to_hex()
                )
            } else {
                format!("other {:o}", md.mode() & 0o170000)
            };
            let mtime = if ft.is_dir() {
                String::new()
            } else {
                format!(" mtime {}.{:09}", md.mtime(), md.mtime_nsec())
            };
            let xattrs = cairn_store::fsmeta::read_xattrs(&p);
            out.insert(
                r.as_os_str().as_bytes().to_vec(),
                format!(
                    "{what} mode {:o} owner {}:{}{mtime} xattrs {xattrs:?}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid()
                ),
            );
        }
    }
    out
}

/// Writes `n` bytes of deterministic, half-compressible data.
pub fn pseudo_data(n: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    for (i, b) in out.iter_mut().enumerate() {
        if (i / 4096) % 2 == 0 {
            *b = b'a' + (*b % 8);
        }
    }
    out
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// A small deterministic generator of kill delays in ms (print the seed so a failure can be
/// replayed).
pub fn delays(seed: u64, n: usize, max_ms: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max_ms
        })
        .collect()
}

/// Kills `child` after `ms` milliseconds and reaps it; returns whether it was still
/// running then (a kill that found it done tested nothing).
pub fn kill_after(mut child: std::process::Child, ms: u64) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    running
}

/// Asserts `cairn check` (with `--read-data` when asked) finds nothing wrong.
#[track_caller]
pub fn assert_check_ok(f: &Fixture, read_data: bool, what: &str) {
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let c = f.run(&args);
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap_or_default();
    assert_eq!(v["ok"], true, "{what}: {v} {}", stderr(&c));
}
