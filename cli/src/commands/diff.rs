//! `cairn diff`

use std::collections::BTreeMap;

use cairn_store::BlobId;
use cairn_store::repo::Mode;
use cairn_store::tree::{Entry, Node};
use cairn_store::usage::{TreeCache, reachable};

use super::Global;
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot: id prefix, `latest`, SERVICE@REV or SERVICE@REV~N.
    a: String,
    /// The newer snapshot.
    b: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Changes {
    added: Vec<serde_json::Value>,
    removed: Vec<serde_json::Value>,
    changed: Vec<serde_json::Value>,
}

fn kind(e: &Entry) -> &'static str {
    match e.node {
        Node::File(_) => "file",
        Node::Dir(_) => "dir",
        Node::Symlink(_) => "symlink",
        Node::HardLink(_) => "hardlink",
        Node::CharDevice(_) => "chardev",
        Node::BlockDevice(_) => "blockdev",
        Node::Fifo => "fifo",
    }
}

fn join(path: &str, name: &[u8]) -> String {
    format!("{path}/{}", String::from_utf8_lossy(name))
}

fn walk(
    cache: &mut TreeCache,
    a: Option<&BlobId>,
    b: Option<&BlobId>,
    path: &str,
    out: &mut Changes,
) -> anyhow::Result<()> {
    let ta = a.map(|id| cache.get(id)).transpose()?;
    let tb = b.map(|id| cache.get(id)).transpose()?;
    let mut names: BTreeMap<&[u8], (Option<&Entry>, Option<&Entry>)> = BTreeMap::new();
    for e in ta.iter().flat_map(|t| t.entries.iter()) {
        names.entry(&e.name).or_default().0 = Some(e);
    }
    for e in tb.iter().flat_map(|t| t.entries.iter()) {
        names.entry(&e.name).or_default().1 = Some(e);
    }
    for (name, pair) in names {
        let p = join(path, name);
        match pair {
            (Some(x), None) => {
                out.removed
                    .push(serde_json::json!({"path": p, "kind": kind(x), "size": x.size}));
                if let Node::Dir(id) = &x.node {
                    walk(cache, Some(id), None, &p, out)?;
                }
            }
            (None, Some(y)) => {
                out.added
                    .push(serde_json::json!({"path": p, "kind": kind(y), "size": y.size}));
                if let Node::Dir(id) = &y.node {
                    walk(cache, None, Some(id), &p, out)?;
                }
            }
            (Some(x), Some(y)) => {
                if let (Node::Dir(i), Node::Dir(j)) = (&x.node, &y.node) {
                    if x.mode != y.mode {
                        out.changed.push(serde_json::json!({"path": p, "kind": "dir", "mode_a": format!("{:o}", x.mode & 0o7777), "mode_b": format!("{:o}", y.mode & 0o7777)}));
                    }
                    if i != j {
                        walk(cache, Some(i), Some(j), &p, out)?;
                    }
                    continue;
                }
                let content = kind(x) != kind(y) || x.node != y.node;
                if content || x.mode != y.mode {
                    out.changed.push(serde_json::json!({
                        "path": p, "kind_a": kind(x), "kind_b": kind(y), "size_a": x.size, "size_b": y.size,
                        "mode_a": format!("{:o}", x.mode & 0o7777), "mode_b": format!("{:o}", y.mode & 0o7777),
                        "content_changed": content,
                    }));
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    let (ida, sa) = repo.find_snapshot(&a.a)?;
    let (idb, sb) = repo.find_snapshot(&a.b)?;
    let mut cache = TreeCache::new(&repo);
    let mut ch = Changes::default();
    walk(&mut cache, Some(&sa.tree), Some(&sb.tree), "", &mut ch)?;
    let in_a = reachable(&repo, &[sa.tree])?;
    let in_b = reachable(&repo, &[sb.tree])?;
    let (mut added_bytes, mut added_blobs) = (0u64, 0u64);
    for id in in_b.difference(&in_a) {
        if let Some(loc) = repo.index().get(id)? {
            added_bytes += loc.stored_len as u64;
            added_blobs += 1;
        }
    }
    if a.json {
        crate::outln!(
            "{}",
            serde_json::json!({
                "a": ida.to_hex(), "b": idb.to_hex(), "added": ch.added, "removed": ch.removed,
                "changed": ch.changed, "added_bytes": added_bytes, "added_blobs": added_blobs,
            })
        );
        return Ok(crate::exit::OK);
    }
    for v in &ch.added {
        crate::outln!(
            "+ {}  ({}, {})",
            v["path"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
            ui::size(v["size"].as_u64().unwrap_or(0))
        );
    }
    for v in &ch.removed {
        crate::outln!(
            "- {}  ({}, {})",
            v["path"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
            ui::size(v["size"].as_u64().unwrap_or(0))
        );
    }
    for v in &ch.changed {
        let mut what = Vec::new();
        if v["content_changed"].as_bool() == Some(true) {
            what.push(format!(
                "{} -> {}",
                ui::size(v["size_a"].as_u64().unwrap_or(0)),
                ui::size(v["size_b"].as_u64().unwrap_or(0))
            ));
        }
        if v["mode_a"] != v["mode_b"] {
            what.push(format!(
                "mode {} -> {}",
                v["mode_a"].as_str().unwrap_or(""),
                v["mode_b"].as_str().unwrap_or("")
            ));
        }
        crate::outln!(
            "M {}  ({})",
            v["path"].as_str().unwrap_or(""),
            what.join(", ")
        );
    }
    crate::outln!(
        "{} added, {} removed, {} changed; {} added {} in {} blobs over {}",
        ch.added.len(),
        ch.removed.len(),
        ch.changed.len(),
        idb.short(),
        ui::size(added_bytes),
        added_blobs,
        ida.short()
    );
    Ok(crate::exit::OK)
}
