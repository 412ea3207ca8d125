//! `cairn repair`

use std::sync::Arc;

use cairn_store::backend::LocalBackend;
use cairn_store::repair;
use cairn_store::repo::Mode;
use clap::Subcommand;

use super::Global;

#[derive(clap::Args)]
#[command(
    after_help = "After `check` reports damage: first `cairn repair index --read-data` (damaged \
packs out, their whole blobs kept), then `cairn repair snapshots` (snapshots written again without \
the files whose data was lost), then `cairn check` passes. Nothing is deleted: damaged packs and \
snapshot files are moved to damaged/ inside the repository, so a good copy found elsewhere can be \
put back (then run `cairn index rebuild`). Exit 3 when something was lost, 0 when nothing was."
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Set damaged packs aside (keeping their whole blobs in a new pack) and rebuild the index.
    #[command(
        after_help = "Without --read-data only pack tables are read: a pack whose table is damaged \
is set aside. With --read-data every blob is decrypted and re-hashed too, as `check --read-data` \
does, and a pack with any damaged blob is set aside after its whole blobs are written to a new pack."
    )]
    Index {
        /// Read every pack whole, not only its table.
        #[arg(long)]
        read_data: bool,
        /// Say what would be set aside; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write snapshots again without the files and directories whose data is lost.
    #[command(
        after_help = "A snapshot that needs a blob the index does not have is written again \
without each file or directory that cannot be restored whole (each is named), keeps its label and \
time, and gets the tag `repaired`; the damaged original is moved to damaged/snapshots/. A snapshot \
with nothing left, or whose file cannot be read, is moved aside whole. Run `repair index` first."
    )]
    Snapshots {
        /// Say what would be dropped; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let would = |dry: bool| if dry { "would be " } else { "" };
    match a.cmd {
        Cmd::Index {
            read_data,
            dry_run,
            json,
        } => {
            let path = g.repo_path()?;
            if !path.join("config").exists() {
                return Err(cairn_store::Error::NoRepository(path.to_path_buf()).into());
            }
            let pw = g.password()?;
            let r = repair::repair_index(
                Arc::new(LocalBackend::new(path)),
                path,
                &pw,
                read_data,
                dry_run,
            )?;
            if json {
                crate::outln!("{}", serde_json::to_string(&r)?);
            } else {
                for s in &r.salvaged {
                    eprintln!(
                        "damaged pack {}: {}; {} blobs kept, {} lost; {}set aside{}",
                        &s.pack[..16],
                        s.why,
                        s.kept,
                        s.lost,
                        would(dry_run),
                        if s.moved_to.is_empty() {
                            String::new()
                        } else {
                            format!(" as {}", s.moved_to)
                        }
                    );
                }
                if !g.quiet {
                    crate::outln!(
                        "{} packs looked at ({} read whole), {} damaged, {} new packs",
                        r.packs,
                        r.packs_read,
                        r.salvaged.len(),
                        r.new_packs
                    );
                    if !dry_run {
                        crate::outln!(
                            "index rebuilt: {} packs, {} snapshots",
                            r.indexed_packs,
                            r.indexed_snapshots
                        );
                    }
                    if r.salvaged.iter().any(|s| s.lost > 0) && !dry_run {
                        crate::outln!(
                            "next: `cairn repair snapshots` drops what the lost blobs took with them"
                        );
                    }
                }
            }
            Ok(if r.salvaged.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::PARTIAL
            })
        }
        Cmd::Snapshots { dry_run, json } => {
            let repo = g.open(Mode::Write)?;
            let r = repair::repair_snapshots(&repo, dry_run)?;
            if json {
                crate::outln!("{}", serde_json::to_string(&r)?);
            } else {
                for s in &r.rewritten {
                    let label = s
                        .label
                        .as_ref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default();
                    if dry_run {
                        eprintln!(
                            "snapshot {}{label} would be written again without:",
                            &s.old[..8]
                        );
                    } else {
                        eprintln!(
                            "snapshot {}{label} written again as {} without:",
                            &s.old[..8],
                            &s.new[..8]
                        );
                    }
                    for p in &s.lost {
                        eprintln!("  lost: {p}");
                    }
                }
                for s in &r.set_aside {
                    let label = s
                        .label
                        .as_ref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default();
                    eprintln!(
                        "snapshot {}{label} {}set aside whole: {}",
                        &s.snapshot[..8],
                        would(dry_run),
                        s.why
                    );
                }
                if !g.quiet {
                    crate::outln!(
                        "{} snapshots looked at, {} {}written again, {} {}set aside",
                        r.snapshots,
                        r.rewritten.len(),
                        would(dry_run),
                        r.set_aside.len(),
                        would(dry_run)
                    );
                }
            }
            Ok(if r.rewritten.is_empty() && r.set_aside.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::PARTIAL
            })
        }
    }
}
