//! `cairn restore`

use std::path::PathBuf;

use cairn_store::repo::Mode;
use cairn_store::restorer;
use cairn_store::service;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Writes only inside --target: entries with unsafe names, hard links that \
leave the snapshot and device nodes are refused. Each file is written under a temporary name and \
renamed into place only after every byte was authenticated."
)]
pub struct Args {
    /// Snapshot: id prefix, `latest`, SERVICE@REV or SERVICE@REV~N.
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, short = 't', value_name = "DIR")]
    target: PathBuf,
    /// With SERVICE or SERVICE@REV: the newest such snapshot not after this time (UTC:
    /// YYYY-MM-DD[ HH:MM[:SS]], or @SECONDS).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Restore only this path of the snapshot (kept at its place under the target).
    #[arg(long, value_name = "PATH")]
    include: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    // A shared lock: a prune waits for this read to finish before deleting packs.
    let _lock = repo.lock(false, "restore")?;
    let (id, snap) = match &a.at {
        None => repo.find_snapshot(&a.snapshot)?,
        Some(t) => {
            let t = ui::parse_time(t)?;
            let (service, pick) = match a.snapshot.split_once('@') {
                Some((s, r)) => (s, service::Pick::RevisionAt(r.to_string(), t)),
                None => (a.snapshot.as_str(), service::Pick::At(t)),
            };
            service::resolve(&repo, service, &pick)?.ok_or_else(|| {
                anyhow::anyhow!("no snapshot of {} at or before {}", a.snapshot, ui::time(t))
            })?
        }
    };
    let bar = ui::Bar::new(g.quiet, "restore");
    let r = restorer::restore(&repo, &snap.tree, &a.target, a.include.as_deref(), &bar);
    bar.finish();
    let stats = r?;
    if !g.quiet {
        crate::outln!(
            "restored snapshot {}{} to {}: {}, {}, {}",
            id.short(),
            snap.label().map(|l| format!(" ({l})")).unwrap_or_default(),
            a.target.display(),
            ui::plural(stats.files, "file"),
            ui::plural(stats.dirs, "dir"),
            ui::size(stats.bytes)
        );
    }
    if !stats.failed.is_empty() {
        anyhow::bail!(
            "restore incomplete: {} file(s) could not be restored because their data is damaged: {}",
            stats.failed.len(),
            stats.failed.join("; ")
        );
    }
    if !stats.skipped.is_empty() {
        eprintln!("warning: {} entries were not restored", stats.skipped.len());
        return Ok(crate::exit::PARTIAL);
    }
    Ok(crate::exit::OK)
}
