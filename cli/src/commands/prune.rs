//! `cairn prune`

use anyhow::bail;
use cairn_store::prune::{self, Options};
use cairn_store::repo::{Mode, Repo};

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Deletes packs no snapshot needs and repacks partly used ones until unused \
space is under --max-unused. Backups and state dumps keep running meanwhile: packs are first hidden \
from the index, then deleted only after every backup that started before that has finished, and only \
if no snapshot written meanwhile needs them. A prune that is interrupted is finished by the next one."
)]
pub struct Args {
    /// Repack until unused bytes are at most this share of all pack bytes (0% repacks every
    /// partly used pack).
    #[arg(long, value_name = "P%", default_value = "5%")]
    max_unused: String,
    /// Say what would be deleted and moved; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also repack every pack sealed under an older key generation (after `key rotate`),
    /// so that all data is sealed under the newest.
    #[arg(long)]
    reseal: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub struct Say(pub bool);
impl prune::Progress for Say {
    fn step(&self, msg: &str) {
        if !self.0 {
            eprintln!("{msg}");
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Write)?;
    let mut opts = options(&a.max_unused, a.dry_run)?;
    opts.reseal = a.reseal;
    prune_now(g, &repo, &opts, a.json)
}

/// Prunes an open repository.
pub fn prune_now(g: &Global, repo: &Repo, opts: &Options, json: bool) -> anyhow::Result<u8> {
    let dry_run = opts.dry_run;
    let r = prune::prune(repo, opts, &Say(g.quiet || json))?;
    if json {
        crate::outln!("{}", serde_json::to_string(&r)?);
    }
    say(g, &r, dry_run, json);
    Ok(crate::exit::OK)
}

/// Prints what a prune did (the text form; with `json`, only the note on deferral).
pub fn say(g: &Global, r: &prune::Report, dry_run: bool, json: bool) {
    if !json && !g.quiet {
        crate::outln!(
            "{}{} packs ({}): {} used, {} unused",
            if dry_run { "would prune: " } else { "" },
            r.packs,
            ui::size(r.pack_bytes),
            ui::size(r.used_bytes),
            ui::size(r.unused_bytes)
        );
        crate::outln!(
            "  {} packs {}deleted whole, {} repacked ({} blobs, {} moved into {} new packs)",
            r.delete_packs,
            if dry_run { "to be " } else { "" },
            r.repack_packs,
            r.repacked_blobs,
            ui::size(r.repacked_bytes),
            r.new_packs
        );
        if !dry_run {
            crate::outln!(
                "  packs now {} (freed {})",
                ui::size(r.pack_bytes_after),
                ui::size(r.pack_bytes.saturating_sub(r.pack_bytes_after))
            );
        }
        if r.kept_back > 0 {
            crate::outln!(
                "  {} packs kept: backups that ran meanwhile need them",
                r.kept_back
            );
        }
    }
    if r.deferred {
        eprintln!(
            "note: backups that started before this prune are still running; run prune again later to finish"
        );
    }
}

/// Parses `--max-unused` into prune options.
pub fn options(max_unused: &str, dry_run: bool) -> anyhow::Result<Options> {
    let pct: f64 = max_unused
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("{max_unused:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&pct) {
        bail!("--max-unused takes a percentage from 0 to 100");
    }
    Ok(Options {
        max_unused_pct: pct,
        dry_run,
        ..Options::default()
    })
}
