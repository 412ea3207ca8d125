//! `cairn key`

use cairn_store::repo::Mode;
use clap::Subcommand;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "New passwords come from CAIRN_NEW_PASSWORD or CAIRN_NEW_PASSWORD_FILE, or \
are asked twice on the terminal. Every key file wraps the same master key, so adding or removing one \
never re-encrypts data. `key rotate` is for a master key that may have leaked: see its --help."
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List key files (`*` marks the one the password opened).
    List,
    /// Add a key file for a new password.
    Add,
    /// Remove a key file (not the one in use, not the last).
    Remove {
        /// Key file name or prefix, as `key list` shows it.
        id: String,
    },
    /// Change the password of the key file in use.
    Passwd,
    /// Seal everything written from now on under a new key generation.
    #[command(
        after_help = "For a master key that may have leaked (a key file and its password, or a \
copy of the key): draws the key of a new generation, which every pack, snapshot, lock and event \
written from now on is sealed under, and replaces the key file in use with one that also wraps it \
(same password). Objects of older generations stay readable, and stay readable to whoever holds the \
old key: prune re-seals the data it repacks under the new generation, and `prune --reseal` repacks \
every older pack so that their data is sealed anew (delete copies of the old packs elsewhere too). \
Snapshot files, events and the config keep their older generation. Chunk ids and cut points do not \
change, so new data still deduplicates against old: a former key holder can still tell whether a \
file they guess is stored, not read what is. Other key files cannot be given the new generation \
without their passwords: pass --remove-other-keys, then `key add` new ones."
    )]
    Rotate {
        /// Remove every other key file (they cannot open data of the new generation).
        #[arg(long)]
        remove_other_keys: bool,
    },
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Keys)?;
    match a.cmd {
        Cmd::List => {
            let pw = g.password()?;
            for (name, kf) in repo.list_keys(&pw)? {
                let mark = if name == repo.key_name() { "*" } else { " " };
                let short = name.trim_start_matches("keys/");
                match kf {
                    Some(k) => crate::outln!(
                        "{mark} {short}  {}  {}@{}  argon2id m={}KiB t={} p={}",
                        ui::time(k.created_ns),
                        k.user,
                        k.host,
                        k.kdf.m_kib,
                        k.kdf.t,
                        k.kdf.p
                    ),
                    None => crate::outln!("{mark} {short}  (another password)"),
                }
            }
        }
        Cmd::Add => {
            let pw = crate::password::new(None, false)?;
            let name = repo.add_key(&pw)?;
            crate::outln!("added key {}", name.trim_start_matches("keys/"));
        }
        Cmd::Remove { id } => {
            repo.remove_key(&id)?;
            crate::outln!("removed key {id}");
        }
        Cmd::Rotate { remove_other_keys } => {
            let pw = g.password()?;
            let (name, generation, removed) = repo.rotate_key(&pw, remove_other_keys)?;
            for r in &removed {
                crate::outln!("removed key {}", r.trim_start_matches("keys/"));
            }
            crate::outln!(
                "new key generation {generation}: everything written from now on is sealed under it; \
                 key file is now {}",
                name.trim_start_matches("keys/")
            );
        }
        Cmd::Passwd => {
            let pw = crate::password::new(None, false)?;
            let name = repo.change_password(&pw)?;
            crate::outln!(
                "password changed; key file is now {}",
                name.trim_start_matches("keys/")
            );
        }
    }
    Ok(crate::exit::OK)
}
