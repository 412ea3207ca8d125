//! `cairn demo`: the whole story on a temporary repository, with nothing to set up.
//!
//! A Drupal-like `sites/` tree and a SQL dump are generated, snapshotted as drupal@r1,
//! "upgraded" (a column added, 1% of rows changed, files added and edited), snapshotted as
//! drupal@r2, and drupal@r1 is restored by its label and compared byte for byte with what was
//! saved. The table at the end shows what each snapshot cost.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_store::archiver::{self, BackupOptions, Item, Stream, StreamSource};
use cairn_store::config::KdfParams;
use cairn_store::repo::{self, Mode, Repo};
use cairn_store::restorer;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the demo's files (repository, state, restore) in this new directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Rows in the generated database dump (about 150 bytes each).
    #[arg(long, default_value_t = 100_000)]
    rows: u32,
}

struct Quiet;
impl restorer::Progress for Quiet {}

const PASSWORD: &[u8] = b"demo password (not secret)";

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let tmp;
    let base = match &a.keep {
        Some(d) => {
            if d.exists() && fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty", d.display());
            }
            fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("cairn-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let say = |s: String| {
        if !g.quiet {
            println!("{s}");
        }
    };
    let repo_dir = base.join("repo");
    let state = base.join("state");
    let sites = state.join("sites");
    let dump = state.join("db.sql");
    say(format!("== cairn demo in {}", base.display()));
    // A light KDF: this repository's password is printed above, it protects nothing.
    repo::init(
        &repo_dir,
        PASSWORD,
        KdfParams {
            m_kib: 8 * 1024,
            t: 1,
            p: 1,
        },
    )?;
    say(format!(
        "1. created an encrypted repository at {}",
        repo_dir.display()
    ));

    make_sites(&sites, 1)?;
    make_dump(&dump, a.rows, 1)?;
    let r1_digest = digest(&state)?;
    let repo = Repo::open(&repo_dir, PASSWORD, Mode::Write)?;
    let s1 = snap(&repo, &sites, &dump, "r1")?;
    say(format!(
        "2. state dump of drupal@r1: snapshot {} ({} in, {} stored)",
        s1.0,
        ui::size(s1.1),
        ui::size(s1.2)
    ));

    make_sites(&sites, 2)?;
    make_dump(&dump, a.rows, 2)?;
    say("3. upgrade to r2: ALTER TABLE, 1% of rows migrated, uploads and settings changed".into());
    let s2 = snap(&repo, &sites, &dump, "r2")?;
    say(format!(
        "4. state dump of drupal@r2: snapshot {} ({} in, {} stored)",
        s2.0,
        ui::size(s2.1),
        ui::size(s2.2)
    ));
    drop(repo);

    let repo = Repo::open(&repo_dir, PASSWORD, Mode::Read)?;
    let out = base.join("restore-r1");
    let (_, snap1) = repo.find_snapshot("drupal@r1")?;
    restorer::restore(&repo, &snap1.tree, &out, None, &Quiet)?;
    let same = digest(&out)? == r1_digest;
    say(format!(
        "5. roll back: restored drupal@r1 into {}: {}",
        out.display(),
        if same {
            "identical to the r1 state, byte for byte"
        } else {
            "DIFFERENT"
        }
    ));
    if !same {
        bail!("the restored r1 state differs from what was saved");
    }

    say(String::new());
    say(format!(
        "{:<18} {:>12} {:>14} {:>8}",
        "snapshot", "logical", "added to repo", "ratio"
    ));
    let mut total_in = 0;
    for (id, s) in repo.snapshots()? {
        total_in += s.summary.bytes;
        say(format!(
            "{:<18} {:>12} {:>14} {:>7.1}x   ({})",
            s.label().unwrap_or_default(),
            ui::size(s.summary.bytes),
            ui::size(s.summary.added_bytes),
            s.summary.bytes as f64 / s.summary.added_bytes.max(1) as f64,
            id.short()
        ));
    }
    let on_disk = du(&repo_dir.join("packs"))?;
    say(format!(
        "packs on disk: {} for {} of state ({:.1}x smaller); every byte encrypted",
        ui::size(on_disk),
        ui::size(total_in),
        total_in as f64 / on_disk.max(1) as f64
    ));
    if a.keep.is_none() {
        say("(the demo's files are removed now; --keep DIR keeps them)".into());
    }
    Ok(crate::exit::OK)
}

fn snap(repo: &Repo, sites: &Path, dump: &Path, rev: &str) -> anyhow::Result<(String, u64, u64)> {
    let f = fs::File::open(dump)?;
    let r = archiver::backup(
        repo,
        BackupOptions {
            items: vec![
                Item::path(sites)?,
                Item::Stream(Stream {
                    name: "db.sql".into(),
                    source: StreamSource::Reader(Box::new(f)),
                }),
            ],
            service: Some("drupal".into()),
            revision: Some(rev.into()),
            tags: vec!["demo".into()],
        },
        &archiver::Silent,
    )?;
    Ok((
        r.id.short(),
        r.snapshot.summary.bytes,
        r.snapshot.summary.added_bytes,
    ))
}

/// A small deterministic generator (xorshift), so the demo needs no data files.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> &'static str {
        const W: [&str; 16] = [
            "lorem", "ipsum", "drupal", "node", "field", "views", "user", "cache", "entity",
            "block", "theme", "path", "alias", "menu", "taxonomy", "revision",
        ];
        W[(self.next() % 16) as usize]
    }
}

fn make_sites(sites: &Path, rev: u32) -> anyhow::Result<()> {
    let files = sites.join("default/files");
    fs::create_dir_all(files.join("css"))?;
    fs::create_dir_all(sites.join("all/modules/custom"))?;
    fs::write(
        sites.join("default/settings.php"),
        format!(
            "<?php\n$databases['default']['default'] = ['database' => 'drupal', 'driver' => 'mysql'];\n$settings['hash_salt'] = 'demo';\n$settings['config_sync_directory'] = 'sites/default/files/sync';\n$settings['schema_revision'] = {rev};\n"
        ),
    )?;
    let mut rng = Rng(42);
    for i in 0..40 {
        let mut data = vec![0u8; 20_000 + (rng.next() % 200_000) as usize];
        for b in data.chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
        fs::write(files.join(format!("upload-{i:03}.jpg")), data)?;
    }
    for i in 0..30 {
        let mut s = String::new();
        for _ in 0..200 {
            s.push_str(&format!(
                ".{}-{} {{ color: #{:06x}; }}\n",
                rng.word(),
                i,
                rng.next() & 0xffffff
            ));
        }
        fs::write(files.join(format!("css/css_{i:02}.css")), s)?;
    }
    fs::write(
        sites.join("all/modules/custom/demo.module"),
        "<?php\nfunction demo_help() { return 'demo'; }\n",
    )?;
    if rev >= 2 {
        let mut data = vec![0u8; 150_000];
        for b in data.chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
        fs::write(files.join("upload-after-upgrade.png"), data)?;
        fs::write(
            files.join("css/css_07.css"),
            ".migrated { display: none; }\n",
        )?;
    }
    Ok(())
}

fn make_dump(path: &Path, rows: u32, rev: u32) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(f, "-- MariaDB dump (cairn demo), schema revision {rev}")?;
    writeln!(
        f,
        "CREATE TABLE `node_field_data` (`nid` int, `title` varchar(255), `body` text{});",
        if rev >= 2 {
            ", `langcode` varchar(12)"
        } else {
            ""
        }
    )?;
    let mut rng = Rng(7);
    for nid in 0..rows {
        let mut title = format!("{} {} {}", rng.word(), rng.word(), rng.next() % 10_000);
        let body = format!(
            "{} {} {} {} {}",
            rng.word(),
            rng.word(),
            rng.word(),
            rng.word(),
            rng.next()
        );
        let migrated = rng.next().is_multiple_of(100);
        if rev >= 2 && migrated {
            title.push_str(" (migrated)");
        }
        let extra = if rev >= 2 { ",'und'" } else { "" };
        writeln!(
            f,
            "INSERT INTO `node_field_data` VALUES ({nid},'{title}','{body}'{extra});"
        )?;
    }
    f.flush().context("writing the demo dump")?;
    Ok(())
}

/// A BLAKE3 digest over every path, kind and content below `dir` (file order sorted),
/// excluding the top directory's own name.
fn digest(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names.into_iter().rev() {
            let r = rel.join(&n);
            let p = dir.join(&r);
            let md = fs::symlink_metadata(&p)?;
            h.update(r.as_os_str().as_encoded_bytes());
            if md.is_dir() {
                h.update(b"/");
                stack.push(r);
            } else {
                h.update(&fs::read(&p)?);
            }
        }
    }
    Ok(*h.finalize().as_bytes())
}

fn du(dir: &Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        n += if md.is_dir() {
            du(&e.path())?
        } else {
            md.len()
        };
    }
    Ok(n)
}
