//! `cairn backup`

use std::path::PathBuf;

use anyhow::bail;
use cairn_store::archiver::{self, BackupOptions, CommandLine, Item, Stream, StreamSource};
use cairn_store::repo::Mode;
use cairn_store::servicefile::{valid_revision, valid_service_name};

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Each PATH is stored under the snapshot's root by its base name. A stream \
(--stdin or --command) becomes one more file in the root, named by --stdin-name. A --command \
that exits non-zero or is killed fails the backup, and no snapshot is written.\n\n\
Examples:\n  cairn backup /var/lib/drupal/sites --service drupal --revision 3f9c2a\n  \
cairn backup --command 'mysqldump drupal' --stdin-name db.sql --service drupal --revision 3f9c2a"
)]
pub struct Args {
    /// Files and directories to store.
    paths: Vec<PathBuf>,
    /// Store standard input as a file named by --stdin-name.
    #[arg(long, conflicts_with = "command")]
    stdin: bool,
    /// Store the output of this shell command (run with `sh -c`).
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
    /// File name of the stream in the snapshot.
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_name: String,
    /// Service label, e.g. drupal.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Revision label, any string (e.g. a Guix store hash). Needs --service.
    #[arg(long, value_name = "REV", requires = "service")]
    revision: Option<String>,
    /// A tag; repeat for more.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Read every file again. By default a file whose size, mtime, ctime and inode are those
    /// it had in the parent snapshot (the newest of the same service, or of the same paths)
    /// keeps its chunks from there without being read, and a changed large file is stored
    /// as delta runs against its version there; --force does neither.
    #[arg(long)]
    force: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    if a.paths.is_empty() && !a.stdin && a.command.is_none() {
        bail!("nothing to back up: give paths, --stdin or --command (see `cairn backup --help`)");
    }
    if let Some(s) = &a.service
        && !valid_service_name(s)
    {
        bail!("service name {s:?} may not be empty or hold '@', '~', '/' or white space");
    }
    if let Some(r) = &a.revision
        && !valid_revision(r)
    {
        bail!(
            "revision {r:?} may not be empty or hold '@', '~', white space or control characters"
        );
    }
    let repo = g.open(Mode::Write)?;
    let mut items = Vec::new();
    for p in &a.paths {
        items.push(Item::path(p)?);
    }
    if a.stdin {
        let source = StreamSource::Reader(Box::new(std::io::stdin()));
        items.push(Item::Stream(Stream {
            name: a.stdin_name.clone(),
            source,
        }));
    } else if let Some(c) = a.command.clone() {
        let source = StreamSource::Command(CommandLine::Shell(c));
        items.push(Item::Stream(Stream {
            name: a.stdin_name.clone(),
            source,
        }));
    }
    let opts = BackupOptions {
        items,
        service: a.service,
        revision: a.revision,
        tags: a.tags,
        parent: None,
        reread: a.force,
    };
    let bar = ui::Bar::new(g.quiet || a.json, "backup");
    let r = archiver::backup(&repo, opts, &bar);
    bar.finish();
    let r = r?;
    let s = &r.snapshot.summary;
    if a.json {
        let v = serde_json::json!({
            "id": r.id.to_hex(),
            "label": r.snapshot.label(),
            "summary": s,
            "warnings": r.warnings,
        });
        crate::outln!("{v}");
    } else if !g.quiet {
        let label = r
            .snapshot
            .label()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        crate::outln!(
            "snapshot {}{label} saved: {}, {}, {} read, {} new in {}, {} added to the repository, {:.1}s",
            r.id.short(),
            ui::plural(s.files, "file"),
            ui::plural(s.dirs, "dir"),
            ui::size(s.bytes),
            ui::size(s.new_raw_bytes),
            ui::plural(s.new_blobs, "blob"),
            ui::size(s.added_bytes),
            s.duration_ms as f64 / 1000.0
        );
    }
    if !r.warnings.is_empty() {
        eprintln!(
            "warning: {} entries could not be read and are not in the snapshot",
            r.warnings.len()
        );
        return Ok(crate::exit::PARTIAL);
    }
    Ok(crate::exit::OK)
}
