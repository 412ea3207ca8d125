//! `cairn demo`: the whole story on a temporary repository, with nothing to set up.
//!
//! A Drupal-like service is made: a `sites/` tree and a database, which here is a SQL file
//! dumped with `cat` and loaded with `cat >` (a real service file names `mysqldump` and
//! `mysql`; the end-to-end tests do that against a real MariaDB). Then the state shim runs
//! around an upgrade and two roll-backs:
//!
//! 1. `state dump drupal --revision r1` before the upgrade;
//! 2. the "upgrade" migrates the state in place (a column added, 1% of rows changed, uploads
//!    and settings changed); `state transition --to r2` records the move; more work under r2;
//! 3. `state transition --to r1` rolls back: the state is exactly r1's again;
//! 4. `state transition --to r2` rolls forward: exactly the r2 state as it was.
//!
//! The table at the end shows what each snapshot cost.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_store::config::KdfParams;
use cairn_store::repo::{self, Mode, Repo};
use cairn_store::service::{self, Options, Report};
use cairn_store::servicefile::ServiceFile;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the demo's files (repository, service file, state) in this new directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Rows in the generated database (about 150 bytes each).
    #[arg(long, default_value_t = 100_000)]
    rows: u32,
}

const PASSWORD: &[u8] = b"demo password (not secret)";

struct Say(bool);
impl cairn_store::archiver::Progress for Say {}
impl cairn_store::restorer::Progress for Say {}
impl Report for Say {
    fn step(&self, msg: &str) {
        if !self.0 {
            crate::outln!("     {msg}");
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let tmp;
    let base = match &a.keep {
        Some(d) => {
            if d.exists() && fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty", d.display());
            }
            fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            tmp = tempfile::Builder::new().prefix("cairn-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let say = |s: String| {
        if !g.quiet {
            crate::outln!("{s}");
        }
    };
    let repo_dir = base.join("repo");
    let state = base.join("state");
    let sites = state.join("sites");
    let db = state.join("db.sql");
    fs::create_dir_all(&state)?;
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
    let config = format!(
        r#"repository = "{repo}"

[service.drupal]
stop  = "true"   # e.g. "herd stop drupal"
start = "true"   # e.g. "herd start drupal"

[[service.drupal.state]]
name    = "sites"
path    = "{sites}"
exclude = ["default/files/css"]

[[service.drupal.state]]
name = "db"
dump = ["cat", "{db}"]          # e.g. "mysqldump --single-transaction --add-drop-database --databases drupal"
load = "cat > '{db}'"           # e.g. "mysql"
"#,
        repo = repo_dir.display(),
        sites = sites.display(),
        db = db.display()
    );
    fs::write(base.join("cairn.toml"), &config)?;
    let file = ServiceFile::parse(&config)?;
    let svc = file.service("drupal")?;
    say(format!(
        "0. an encrypted repository at {} and a service file:",
        repo_dir.display()
    ));
    say(format!("   {}", base.join("cairn.toml").display()));

    make_sites(&sites, 1)?;
    make_dump(&db, a.rows, 1)?;
    let r1 = digest(&state)?;
    let opts = Options::default();
    let report = Say(g.quiet);
    let repo = Repo::open(&repo_dir, PASSWORD, Mode::Write)?;
    say("1. before the upgrade: cairn state dump drupal --revision r1".into());
    service::dump(&repo, svc, "r1", &opts, &report)?;

    say("2. the upgrade to r2 migrates the state in place (ALTER TABLE, 1% of rows, uploads, settings)".into());
    make_sites(&sites, 2)?;
    make_dump(&db, a.rows, 2)?;
    say("   after activating r2: cairn state load drupal --revision r2".into());
    service::load(
        &repo,
        svc,
        &service::Pick::Revision {
            revision: "r2".into(),
            back: 0,
        },
        &opts,
        &report,
    )?;
    say("   ... r2 runs for a while and writes more state".into());
    let mut f = fs::OpenOptions::new().append(true).open(&db)?;
    writeln!(
        f,
        "INSERT INTO `node_field_data` VALUES ({},'written under r2','new','en');",
        a.rows
    )?;
    drop(f);
    fs::write(
        sites.join("default/files/written-under-r2.txt"),
        "hello from r2\n",
    )?;
    let r2 = digest(&state)?;

    say("3. roll back: cairn state transition drupal --to r1".into());
    service::transition(&repo, svc, "r1", None, &opts, &report)?;
    let back = digest(&state)? == r1;
    say(format!(
        "   the state is {}",
        if back {
            "exactly r1's again"
        } else {
            "NOT r1's"
        }
    ));

    say("4. roll forward: cairn state transition drupal --to r2".into());
    service::transition(&repo, svc, "r2", None, &opts, &report)?;
    let fwd = digest(&state)? == r2;
    say(format!(
        "   the state is {}",
        if fwd {
            "exactly r2's as it was before the roll-back"
        } else {
            "NOT r2's"
        }
    ));
    if !back || !fwd {
        bail!("the demo's state did not come back identical");
    }

    say(String::new());
    say(format!(
        "{:<22} {:<14} {:>12} {:>14}",
        "snapshot", "tags", "state", "added to repo"
    ));
    let mut total_in = 0;
    for (id, s) in repo.snapshots()? {
        total_in += s.summary.bytes;
        say(format!(
            "{:<22} {:<14} {:>12} {:>14}   ({})",
            s.label().unwrap_or_default(),
            s.tags.join(","),
            ui::size(s.summary.bytes),
            ui::size(s.summary.added_bytes),
            id.short()
        ));
    }
    let on_disk = du(&repo_dir.join("packs"))?;
    say(format!(
        "packs on disk: {} for {} of state snapshots ({:.1}x smaller); every byte encrypted",
        ui::size(on_disk),
        ui::size(total_in),
        total_in as f64 / on_disk.max(1) as f64
    ));
    match &a.keep {
        Some(d) => say(format!(
            "try: CAIRN_PASSWORD='{}' cairn --config {}/cairn.toml state history drupal",
            String::from_utf8_lossy(PASSWORD),
            d.display()
        )),
        None => say("(the demo's files are removed now; --keep DIR keeps them)".into()),
    }
    Ok(crate::exit::OK)
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
            if r == Path::new("sites/default/files/css") {
                continue; // excluded in the service file: a cache, not state
            }
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
