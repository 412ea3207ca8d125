//! `cairn check`

use anyhow::bail;
use cairn_store::check::{self, ReadData};
use cairn_store::repo::Mode;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Without options, checks structure: every pack's table authenticates and \
agrees with the index, every snapshot and tree decodes, every blob a snapshot needs is indexed. \
The --read-data options also read packs whole and decrypt, decompress and re-hash every blob. \
cairn remembers when each pack was last verified, so repeated --read-data-subset runs cover the \
whole repository, least recently verified first. Exit 1 if anything is damaged; each damaged pack \
is listed with the snapshots and files it affects."
)]
pub struct Args {
    /// Read every pack whole.
    #[arg(long, group = "read")]
    read_data: bool,
    /// Read this share of the packs (e.g. 25%), least recently verified first.
    #[arg(long, value_name = "P%", group = "read")]
    read_data_subset: Option<String>,
    /// Read the packs not verified within this long (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", group = "read")]
    read_data_since: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

struct Bar(ui::Bar);
impl check::Progress for Bar {
    fn bytes(&self, n: u64) {
        cairn_store::archiver::Progress::bytes(&self.0, n);
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let read = if a.read_data {
        ReadData::All
    } else if let Some(p) = &a.read_data_subset {
        let pct: f64 = p
            .trim_end_matches('%')
            .parse()
            .map_err(|_| anyhow::anyhow!("{p:?} is not a percentage"))?;
        if !(pct > 0.0 && pct <= 100.0) {
            bail!("--read-data-subset takes a percentage above 0 and at most 100");
        }
        ReadData::Subset(pct)
    } else if let Some(d) = &a.read_data_since {
        ReadData::Since(cairn_store::now_ns() - cairn_store::forget::parse_duration(d)?)
    } else {
        ReadData::None
    };
    let repo = g.open(Mode::Read)?;
    // A shared lock: a prune waits for this read to finish before deleting packs.
    let _lock = repo.lock(false, "check")?;
    let bar = Bar(ui::Bar::new(g.quiet || a.json, "check"));
    let r = check::check(&repo, read, &bar);
    bar.0.finish();
    let r = r?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = serde_json::Value::Bool(r.ok());
        crate::outln!("{v}");
    } else {
        if !g.quiet {
            crate::outln!(
                "checked {} packs, {} blobs, {} snapshots, {} trees; read {} packs whole ({})",
                r.packs,
                r.blobs,
                r.snapshots,
                r.trees,
                r.packs_read,
                ui::size(r.bytes_read)
            );
        }
        for n in &r.notes {
            eprintln!("note: {n}");
        }
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        for d in &r.damaged {
            eprintln!(
                "damaged pack {}: {} ({} blobs)",
                &d.pack[..16],
                d.why,
                d.blobs
            );
            for aff in &d.affects {
                let label = aff
                    .label
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                for p in &aff.paths {
                    eprintln!("  snapshot {}{label}: {p}", &aff.snapshot[..8]);
                }
            }
            if d.affects.is_empty() {
                eprintln!("  no snapshot needs its blobs");
            }
        }
        if r.ok() && !g.quiet {
            crate::outln!("no errors");
        }
    }
    if !r.ok() {
        bail!(
            "check found {} damaged pack(s) and {} other error(s)",
            r.damaged.len(),
            r.errors.len()
        );
    }
    Ok(crate::exit::OK)
}
