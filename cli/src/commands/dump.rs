//! `cairn dump`

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::bail;
use cairn_store::repo::Mode;
use cairn_store::restorer::{self, lookup, split_path};
use cairn_store::tree::Node;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: id prefix, `latest`, SERVICE@REV or SERVICE@REV~N.
    snapshot: String,
    /// Path of a file inside the snapshot, e.g. db.sql or sites/default/settings.php.
    path: String,
}

struct Quiet;
impl restorer::Progress for Quiet {}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    // A shared lock: a prune waits for this read to finish before deleting packs.
    let _lock = repo.lock(false, "dump")?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let path = split_path(&a.path)?;
    let e = lookup(&repo, &snap.tree, &path)?;
    let parts = match &e.node {
        Node::File(p) => p.clone(),
        Node::HardLink(to) => match lookup(&repo, &snap.tree, to)?.node {
            Node::File(p) => p,
            _ => bail!("{} is a hard link to something that is not a file", a.path),
        },
        _ => bail!("{} is not a regular file", a.path),
    };
    // Chunks are written straight to file descriptor 1, not through `Stdout`: that one
    // buffers by lines, so each write was searched for its last newline (an SQL dump has
    // millions) and its tail copied. A few small chunks still go out together.
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(fd));
    restorer::write_parts(&repo, &parts, &mut out, &a.path, &Quiet)?;
    out.flush()?;
    Ok(crate::exit::OK)
}
