//! `cairn ls`

use cairn_store::repo::{Mode, Repo};
use cairn_store::restorer::{lookup, split_path};
use cairn_store::tree::{Entry, Node};

use super::Global;
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: id prefix, `latest`, SERVICE@REV or SERVICE@REV~N.
    snapshot: String,
    /// Only below this path inside the snapshot.
    path: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let prefix = split_path(a.path.as_deref().unwrap_or(""))?;
    let mut out = std::io::stdout().lock();
    if prefix.is_empty() {
        walk(&repo, &snap.tree, &mut Vec::new(), &mut out)?;
    } else {
        let e = lookup(&repo, &snap.tree, &prefix)?;
        let mut rel = prefix[..prefix.len() - 1].to_vec();
        print(&e, &rel, &mut out)?;
        if let Node::Dir(id) = e.node {
            rel.push(e.name.clone());
            walk(&repo, &id, &mut rel, &mut out)?;
        }
    }
    Ok(crate::exit::OK)
}

fn print(e: &Entry, rel: &[Vec<u8>], out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let kind = match e.node {
        Node::Dir(_) => 'd',
        Node::File(_) => '-',
        Node::Symlink(_) => 'l',
        Node::HardLink(_) => 'h',
        Node::CharDevice(_) => 'c',
        Node::BlockDevice(_) => 'b',
        Node::Fifo => 'p',
    };
    let mut path = String::new();
    for c in rel.iter().chain(std::iter::once(&e.name)) {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(c));
    }
    let extra = match &e.node {
        Node::Symlink(t) => format!(" -> {}", String::from_utf8_lossy(t)),
        Node::HardLink(t) => format!(
            " => /{}",
            t.iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        ),
        _ => String::new(),
    };
    writeln!(
        out,
        "{kind}{:04o} {:>5} {:>5} {:>10} {} {path}{extra}",
        e.mode & 0o7777,
        e.uid,
        e.gid,
        ui::size(e.size),
        ui::time(e.mtime_ns)
    )?;
    Ok(())
}

fn walk(
    repo: &Repo,
    id: &cairn_store::BlobId,
    rel: &mut Vec<Vec<u8>>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let tree = repo.load_tree(id)?;
    for e in &tree.entries {
        print(e, rel, out)?;
        if let Node::Dir(sub) = &e.node {
            rel.push(e.name.clone());
            walk(repo, sub, rel, out)?;
            rel.pop();
        }
    }
    Ok(())
}
