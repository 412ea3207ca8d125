//! `cairn snapshots`

use cairn_store::repo::Mode;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this service.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    // A damaged snapshot file is named and the others are listed (exit 3); a file that
    // cannot be read just now fails the command.
    let (all, damaged) = repo.readable_snapshots()?;
    let code = crate::ui::warn_damaged(&damaged, "listed");
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.service.is_none() || s.service == a.service)
        .collect();
    if a.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(), "time_ns": s.time_ns, "hostname": s.hostname, "username": s.username,
                    "paths": s.paths, "service": s.service, "revision": s.revision, "tags": s.tags,
                    "tree": s.tree.to_hex(), "summary": s.summary,
                    "parent": s.parent.map(|p| p.to_hex()),
                })
            })
            .collect();
        crate::outln!("{}", serde_json::json!({ "snapshots": list }));
        return Ok(code);
    }
    crate::outln!(
        "{:<10} {:<20} {:<24} {:>10} {:>10}  paths",
        "id",
        "time (UTC)",
        "service@revision",
        "size",
        "added"
    );
    for (id, s) in &snaps {
        crate::outln!(
            "{:<10} {:<20} {:<24} {:>10} {:>10}  {}{}",
            id.short(),
            ui::time(s.time_ns),
            s.label().unwrap_or_else(|| "-".into()),
            ui::size(s.summary.bytes),
            ui::size(s.summary.added_bytes),
            s.paths.join(" "),
            if s.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", s.tags.join(","))
            }
        );
    }
    crate::outln!("{} snapshots", snaps.len());
    Ok(code)
}
