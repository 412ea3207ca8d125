//! `cairn key`

use cairn_store::repo::Mode;
use clap::Subcommand;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "New passwords come from CAIRN_NEW_PASSWORD or CAIRN_NEW_PASSWORD_FILE, or \
are asked twice on the terminal. Every key file wraps the same master key, so adding or removing one \
never re-encrypts data."
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
                    Some(k) => println!(
                        "{mark} {short}  {}  {}@{}  argon2id m={}KiB t={} p={}",
                        ui::time(k.created_ns),
                        k.user,
                        k.host,
                        k.kdf.m_kib,
                        k.kdf.t,
                        k.kdf.p
                    ),
                    None => println!("{mark} {short}  (another password)"),
                }
            }
        }
        Cmd::Add => {
            let pw = crate::password::new(None, false)?;
            let name = repo.add_key(&pw)?;
            println!("added key {}", name.trim_start_matches("keys/"));
        }
        Cmd::Remove { id } => {
            repo.remove_key(&id)?;
            println!("removed key {id}");
        }
        Cmd::Passwd => {
            let pw = crate::password::new(None, false)?;
            let name = repo.change_password(&pw)?;
            println!(
                "password changed; key file is now {}",
                name.trim_start_matches("keys/")
            );
        }
    }
    Ok(crate::exit::OK)
}
