//! `cairn init`

use cairn_store::chunker::ChunkerParams;
use cairn_store::config::{Config, KdfParams};

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Argon2id memory for the key file, in KiB (default 65536 = 64 MiB, filled as 4 lanes
    /// on every core).
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::default().m_kib)]
    kdf_memory: u32,
    /// Argon2id passes (default 3).
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().t)]
    kdf_iterations: u32,
    /// Close packs at this size, in MiB (default 16; smaller suits slow remote storage).
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pack_size: u32,
    /// Chunk sizes for files in trees: MIN,AVG,MAX in bytes (K and M suffixes allowed;
    /// default 256K,1M,4M). Recorded in the config; fixed for the repository's life.
    #[arg(long, value_name = "MIN,AVG,MAX")]
    tree_chunks: Option<String>,
    /// Chunk sizes for streams (dumps): MIN,AVG,MAX (default 64K,256K,1M with delta runs,
    /// 16K,64K,256K with --no-delta-runs).
    #[arg(long, value_name = "MIN,AVG,MAX")]
    stream_chunks: Option<String>,
    /// Store every chunk whole: no delta runs for new versions of large streams (config
    /// version 2 otherwise stores them against the previous version; see format-spec/12).
    #[arg(long)]
    no_delta_runs: bool,
    /// zstd level of delta runs (default 3; higher stores less and takes longer).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    delta_level: Option<i32>,
}

fn chunks(s: &str) -> anyhow::Result<ChunkerParams> {
    let n = |x: &str| -> anyhow::Result<u32> {
        let x = x.trim();
        let (num, mul) = match x.chars().last() {
            Some('K' | 'k') => (&x[..x.len() - 1], 1024),
            Some('M' | 'm') => (&x[..x.len() - 1], 1024 * 1024),
            _ => (x, 1),
        };
        Ok(num
            .parse::<u32>()
            .map_err(|_| anyhow::anyhow!("{x:?} is not a size"))?
            * mul)
    };
    let v: Vec<&str> = s.split(',').collect();
    if v.len() != 3 {
        anyhow::bail!("chunk sizes are MIN,AVG,MAX, e.g. 16K,64K,256K");
    }
    Ok(ChunkerParams {
        min: n(v[0])?,
        avg: n(v[1])?,
        max: n(v[2])?,
    })
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let path = g.repo_path()?;
    let pw = crate::password::new(g.password_file.as_deref(), true)?;
    let kdf = KdfParams {
        m_kib: a.kdf_memory,
        t: a.kdf_iterations,
        p: KdfParams::default().p,
    };
    let mut config = Config::new(kdf);
    config.pack_size = a.pack_size << 20;
    if a.no_delta_runs {
        config.delta = None;
        config.chunker_stream = ChunkerParams::STREAM;
    } else if let (Some(d), Some(level)) = (config.delta.as_mut(), a.delta_level) {
        d.level = level;
    }
    if let Some(t) = &a.tree_chunks {
        config.chunker_tree = chunks(t)?;
    }
    if let Some(t) = &a.stream_chunks {
        config.chunker_stream = chunks(t)?;
    }
    cairn_store::repo::init_with(path, &pw, config)?;
    if !g.quiet {
        crate::outln!("created cairn repository at {}", path.display());
        crate::outln!("keep the password safe: without it the data cannot be read, by anyone");
    }
    Ok(crate::exit::OK)
}
