//! `cairn index`

use clap::Subcommand;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Delete the index and make it again from the pack tables and snapshot files.
    Rebuild,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    match a.cmd {
        Cmd::Rebuild => {
            let path = g.repo_path()?;
            if !path.join("config").exists() {
                return Err(cairn_store::Error::NoRepository(path.to_path_buf()).into());
            }
            let pw = g.password()?;
            let r = cairn_store::repo::rebuild_index(path, &pw)?;
            if !g.quiet {
                crate::outln!(
                    "index rebuilt: {} packs, {} snapshots",
                    r.packs_added,
                    r.snapshots_added
                );
            }
            for (name, why) in &r.damaged {
                eprintln!("damaged: {name}: {why}");
            }
            Ok(if r.damaged.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::PARTIAL
            })
        }
    }
}
