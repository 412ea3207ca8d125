//! `cairn stats`

use std::collections::BTreeMap;

use cairn_store::repo::Mode;
use cairn_store::usage::Usage;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Everything is computed from the index and the trees; no file data is \
decrypted. `unique` is what deleting that snapshot alone would free (once `prune` has run with \
--max-unused 0); `shared` is the rest of what it reaches."
)]
pub struct Args {
    /// Snapshots to report on (default: all).
    snapshots: Vec<String>,
    /// Only this service's snapshots.
    #[arg(long, value_name = "NAME", conflicts_with = "snapshots")]
    service: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let repo = g.open(Mode::Read)?;
    // Damaged snapshot files are named and left out of the figures (exit 3).
    let (all, damaged) = repo.readable_snapshots()?;
    let code = crate::ui::warn_damaged(
        &damaged,
        "counted (what deleting a snapshot frees may be less)",
    );
    let roots: Vec<_> = all.iter().map(|(id, s)| (*id, s.tree)).collect();
    let mut chosen = Vec::new();
    if !a.snapshots.is_empty() {
        for spec in &a.snapshots {
            let (id, _) = repo.find_snapshot(spec)?;
            chosen.push(all.iter().position(|(i, _)| *i == id).expect("listed"));
        }
    } else {
        chosen = (0..all.len())
            .filter(|&i| a.service.is_none() || all[i].1.service == a.service)
            .collect();
    }
    let mut selected = vec![false; all.len()];
    for &i in &chosen {
        selected[i] = true;
    }
    // Unique bytes are relative to every snapshot in the repository, whatever is shown.
    let usage = Usage::compute(&repo, &roots, &selected)?;
    let together = usage.selection_unique.stored;
    let packs = repo.index().packs()?;
    let pack_bytes: u64 = packs.iter().map(|p| p.1).sum();
    let (mut indexed_blobs, mut indexed_stored, mut data_blobs) = (0u64, 0u64, 0u64);
    let (mut runs, mut run_stored, mut run_raw) = (Vec::new(), 0u64, 0u64);
    repo.index().for_each_blob(|id, loc| {
        indexed_blobs += 1;
        indexed_stored += loc.stored_len as u64;
        match loc.kind {
            cairn_store::blob::BlobKind::Data => data_blobs += 1,
            cairn_store::blob::BlobKind::DeltaRun => {
                runs.push(*id);
                run_stored += loc.stored_len as u64;
                run_raw += loc.raw_len as u64;
            }
            _ => {}
        }
    })?;
    // How deep the delta chains are, in revisions since their bytes were stored whole, and
    // how many runs a read goes through (fewer where dense runs skipped a level).
    let mut depths = [0u64; 256];
    let (mut max_levels, mut memo) = (0u8, Default::default());
    for r in &runs {
        let (depth, levels) = repo.run_depth_levels(r, &mut memo)?;
        depths[depth as usize] += 1;
        max_levels = max_levels.max(levels);
    }
    let max_depth = depths.iter().rposition(|n| *n > 0).unwrap_or(0);
    let tree_blobs = indexed_blobs - data_blobs - runs.len() as u64;
    let used = usage.total;
    let logical: u64 = chosen.iter().map(|&i| all[i].1.summary.bytes).sum();
    let logical_all: u64 = all.iter().map(|(_, s)| s.summary.bytes).sum();
    let unused = indexed_stored.saturating_sub(used.stored);
    let overhead = pack_bytes.saturating_sub(indexed_stored);

    let per: Vec<_> = chosen
        .iter()
        .map(|&i| {
            let (id, s) = &all[i];
            let u = usage.per_snapshot[i];
            serde_json::json!({
                "id": id.to_hex(), "label": s.label(), "time_ns": s.time_ns, "tags": s.tags,
                "logical_bytes": s.summary.bytes, "stored_bytes": u.all.stored,
                "unique_bytes": u.unique.stored, "shared_bytes": u.all.stored - u.unique.stored,
                "added_bytes": s.summary.added_bytes, "blobs": u.all.blobs,
            })
        })
        .collect();
    let mut services: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>> = BTreeMap::new();
    for &i in &chosen {
        let (id, s) = &all[i];
        if let Some(svc) = &s.service {
            services.entry(svc.clone()).or_default().entry(s.revision.clone().unwrap_or_default()).or_default().push(
                serde_json::json!({"id": id.to_hex(), "time_ns": s.time_ns, "added_bytes": s.summary.added_bytes}),
            );
        }
    }
    if a.json {
        let v = serde_json::json!({
            "repository": {
                "snapshots": all.len(), "packs": packs.len(), "pack_bytes": pack_bytes,
                "blobs": indexed_blobs, "data_blobs": data_blobs, "tree_blobs": tree_blobs,
                "delta_runs": runs.len(), "delta_run_bytes": run_raw, "delta_stored_bytes": run_stored,
                "max_chain_depth": max_depth, "max_read_levels": max_levels,
                "runs_by_depth": depths.iter().enumerate().filter(|(_, n)| **n > 0).map(|(d, n)| (d.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                "logical_bytes": logical_all, "used": used, "unused_bytes": unused, "overhead_bytes": overhead,
                "dedup_ratio": ratio(logical_all, used.raw), "compression_ratio": ratio(used.raw, used.stored),
                "missing_blobs": usage.missing,
            },
            "selected_logical_bytes": logical,
            "selected_unique_bytes": together,
            "snapshots": per,
            "services": services,
        });
        crate::outln!("{v}");
        return Ok(code);
    }
    crate::outln!(
        "repository: {} snapshots, {} packs ({}), {} blobs ({} data, {} trees, {} delta runs)",
        all.len(),
        packs.len(),
        ui::size(pack_bytes),
        indexed_blobs,
        data_blobs,
        tree_blobs,
        runs.len()
    );
    if !runs.is_empty() {
        crate::outln!(
            "  delta runs: {} of data stored in {}; chains at most {} deep, read through at \
             most {}",
            ui::size(run_raw),
            ui::size(run_stored),
            ui::plural(max_depth as u64, "revision"),
            ui::plural(max_levels as u64, "run")
        );
    }
    crate::outln!(
        "  logical bytes in all snapshots  {:>12}",
        ui::size(logical_all)
    );
    crate::outln!(
        "  after dedup (plaintext)         {:>12}   dedup {:.1}x",
        ui::size(used.raw),
        ratio(logical_all, used.raw)
    );
    crate::outln!(
        "  after compression and sealing   {:>12}   compression {:.1}x",
        ui::size(used.stored),
        ratio(used.raw, used.stored)
    );
    crate::outln!(
        "  unused bytes in packs           {:>12}   (prune frees them)",
        ui::size(unused)
    );
    crate::outln!(
        "  pack headers and tables         {:>12}",
        ui::size(overhead)
    );
    if usage.missing > 0 {
        crate::outln!(
            "  WARNING: {} blobs that snapshots need are not in the index (run `cairn check`)",
            usage.missing
        );
    }
    crate::outln!();
    crate::outln!(
        "{:<10} {:<24} {:>10} {:>10} {:>10} {:>10}",
        "snapshot",
        "service@revision",
        "logical",
        "stored",
        "unique",
        "shared"
    );
    for &i in &chosen {
        let (id, s) = &all[i];
        let u = usage.per_snapshot[i];
        crate::outln!(
            "{:<10} {:<24} {:>10} {:>10} {:>10} {:>10}",
            id.short(),
            s.label().unwrap_or_else(|| "-".into()),
            ui::size(s.summary.bytes),
            ui::size(u.all.stored),
            ui::size(u.unique.stored),
            ui::size(u.all.stored - u.unique.stored)
        );
    }
    if chosen.len() != all.len() {
        crate::outln!(
            "deleting these {} snapshots together would free {}",
            chosen.len(),
            ui::size(together)
        );
    }
    for (svc, revs) in &services {
        crate::outln!("\nservice {svc}");
        for (rev, snaps) in revs {
            let added: u64 = snaps
                .iter()
                .map(|v| v["added_bytes"].as_u64().unwrap_or(0))
                .sum();
            crate::outln!(
                "  revision {rev:<20} {} snapshot(s), added {}",
                snaps.len(),
                ui::size(added)
            );
        }
    }
    Ok(code)
}
