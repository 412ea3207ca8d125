//! Where passwords come from: CAIRN_PASSWORD, a password file, or the terminal; never an
//! argument (argument lists are visible to every user of the machine).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// The repository password.
pub fn get(file: Option<&Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if let Some(f) = file {
        return from_file(f);
    }
    if std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password("repository password: ").context("reading the password")?;
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    bail!(
        "no password: set CAIRN_PASSWORD or CAIRN_PASSWORD_FILE, pass --password-file, or run on a terminal"
    )
}

/// A new password (init, key add, key passwd): CAIRN_NEW_PASSWORD, CAIRN_NEW_PASSWORD_FILE, or
/// asked twice on the terminal. `fallback` is used when none is set (init uses the repository
/// password sources).
pub fn new(fallback: Option<&Path>, use_repo_sources: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
        return non_empty(Zeroizing::new(p.into_bytes()));
    }
    if let Ok(f) = std::env::var("CAIRN_NEW_PASSWORD_FILE") {
        return non_empty(from_file(Path::new(&f))?);
    }
    if use_repo_sources {
        if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
            return non_empty(Zeroizing::new(p.into_bytes()));
        }
        if let Some(f) = fallback {
            return non_empty(from_file(f)?);
        }
    }
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("new password: ")?;
        let b = rpassword::prompt_password("new password again: ")?;
        if a != b {
            bail!("the two passwords differ");
        }
        return non_empty(Zeroizing::new(a.into_bytes()));
    }
    bail!(
        "no new password: set CAIRN_NEW_PASSWORD or CAIRN_NEW_PASSWORD_FILE, or run on a terminal"
    )
}

fn non_empty(p: Zeroizing<Vec<u8>>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if p.is_empty() {
        bail!("an empty password is not accepted");
    }
    Ok(p)
}

fn from_file(f: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let s = Zeroizing::new(
        std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?,
    );
    let line = s.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}
