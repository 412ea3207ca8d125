//! `cairn init`

use cairn_store::config::KdfParams;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Argon2id memory for the key file, in KiB (default 65536 = 64 MiB).
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::default().m_kib)]
    kdf_memory: u32,
    /// Argon2id passes (default 3).
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().t)]
    kdf_iterations: u32,
    /// Close packs at this size, in MiB (default 16; smaller suits slow remote storage).
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pack_size: u32,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let path = g.repo_path()?;
    let pw = crate::password::new(g.password_file.as_deref(), true)?;
    let kdf = KdfParams {
        m_kib: a.kdf_memory,
        t: a.kdf_iterations,
        p: 1,
    };
    cairn_store::repo::init_with(path, &pw, kdf, a.pack_size << 20)?;
    if !g.quiet {
        println!("created cairn repository at {}", path.display());
        println!("keep the password safe: without it the data cannot be read, by anyone");
    }
    Ok(crate::exit::OK)
}
