//! `cairn forget`

use std::collections::HashMap;

use anyhow::bail;
use cairn_store::events;
use cairn_store::forget::{self, Policy, SnapshotInfo};
use cairn_store::repo::Mode;
use cairn_store::usage::Usage;

use super::Global;
use crate::ui;

#[derive(clap::Args)]
#[command(
    after_help = "Policies apply within each service (snapshots without a service form one \
group of their own); a snapshot is kept when any rule keeps it. The newest snapshot of a service's \
active revision is never forgotten. Forgetting removes snapshots only; `prune` (or --prune) deletes \
the data no snapshot needs any more."
)]
pub struct Args {
    /// Forget exactly these snapshots (id prefix, SERVICE@REV...) instead of applying a policy.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_hourly: usize,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_daily: usize,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_weekly: usize,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_monthly: usize,
    /// Keep every snapshot within this long of the group's newest (e.g. 7d, 36h, 2w, 1y).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep the N newest snapshots of every revision.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_per_revision: usize,
    /// Never forget snapshots of this revision (repeat for more).
    #[arg(long, value_name = "REV")]
    keep_revision: Vec<String>,
    /// Only this service's snapshots.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Say what would be forgotten and what it would free; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    prune: bool,
    /// With --prune: see `cairn prune --help`.
    #[arg(long, value_name = "P%", default_value = "5%")]
    max_unused: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        within_ns: a
            .keep_within
            .as_deref()
            .map(forget::parse_duration)
            .transpose()?,
        per_revision: a.keep_per_revision,
        keep_revisions: a.keep_revision.clone(),
        service: a.service.clone(),
    };
    if a.snapshots.is_empty() {
        policy.validate()?;
    }
    let repo = g.open(Mode::Write)?;
    let _lock = repo.lock(false, "forget")?;
    let snaps = repo.snapshots()?;
    let infos: Vec<SnapshotInfo> = snaps
        .iter()
        .map(|(id, s)| SnapshotInfo::from_snapshot(*id, s))
        .collect();
    let evs = events::list(&repo, None)?;
    let mut active = HashMap::new();
    for e in evs.iter().filter(|e| e.activates()) {
        if let Some(to) = &e.to {
            active.insert(e.service.clone(), to.clone());
        }
    }
    let decisions = if a.snapshots.is_empty() {
        forget::decide(&infos, &policy, &active)?
    } else {
        let mut chosen = Vec::new();
        for spec in &a.snapshots {
            chosen.push(repo.find_snapshot(spec)?.0);
        }
        infos
            .iter()
            .map(|i| forget::Decision {
                id: i.id,
                keep: !chosen.contains(&i.id),
                reasons: if chosen.contains(&i.id) {
                    Vec::new()
                } else {
                    vec!["not named".into()]
                },
                group: i.service.clone(),
            })
            .collect()
    };
    let gone: Vec<_> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    // What forgetting them frees: blobs they reach that no kept snapshot reaches (the same
    // figure `stats` gives for them as a selection).
    let roots: Vec<_> = snaps.iter().map(|(id, s)| (*id, s.tree)).collect();
    let selected: Vec<bool> = snaps.iter().map(|(id, _)| gone.contains(id)).collect();
    let frees = Usage::compute(&repo, &roots, &selected)?
        .selection_unique
        .stored;
    let mut forget_json = None;
    if a.json {
        let list: Vec<_> = decisions
            .iter()
            .map(|d| serde_json::json!({"id": d.id.to_hex(), "keep": d.keep, "reasons": d.reasons, "service": d.group}))
            .collect();
        forget_json = Some(
            serde_json::json!({"decisions": list, "forget": gone.len(), "frees_bytes": frees, "dry_run": a.dry_run}),
        );
    } else if !g.quiet {
        let mut group = None;
        for d in &decisions {
            if group != Some(&d.group) {
                group = Some(&d.group);
                crate::outln!("{}:", d.group.as_deref().unwrap_or("(no service)"));
            }
            let s = &snaps.iter().find(|(i, _)| *i == d.id).expect("listed").1;
            crate::outln!(
                "  {} {}  {}  {:<20} {}",
                if d.keep { "keep  " } else { "forget" },
                d.id.short(),
                ui::time(s.time_ns),
                s.label().unwrap_or_else(|| "-".into()),
                d.reasons.join(", ")
            );
        }
        crate::outln!(
            "{} {} snapshot(s); {} freed by the next prune",
            if a.dry_run {
                "would forget"
            } else {
                "forgetting"
            },
            gone.len(),
            ui::size(frees)
        );
    }
    // Checked before anything is forgotten, so a bad value changes nothing.
    let prune_opts = super::prune::options(&a.max_unused, false)?;
    if (a.dry_run || !a.prune)
        && let Some(v) = &forget_json
    {
        crate::outln!("{v}");
    }
    if a.dry_run {
        return Ok(crate::exit::OK);
    }
    for id in &gone {
        repo.forget_snapshot(id)?;
    }
    if a.prune {
        drop(_lock);
        let quiet = g.quiet || a.json;
        let r = cairn_store::prune::prune(&repo, &prune_opts, &super::prune::Say(quiet))?;
        // One JSON object: forget's, with prune's report inside.
        if let Some(mut v) = forget_json {
            v["prune"] = serde_json::to_value(&r)?;
            crate::outln!("{v}");
        }
        super::prune::say(g, &r, false, a.json);
        return Ok(crate::exit::OK);
    }
    if gone.is_empty() && policy.service.is_some() && decisions.is_empty() {
        bail!(
            "no snapshots of service {:?}",
            policy.service.unwrap_or_default()
        );
    }
    Ok(crate::exit::OK)
}
