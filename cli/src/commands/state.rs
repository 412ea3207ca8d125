//! `cairn state`: the state shim around a service's transitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_store::events::{self, Kind};
use cairn_store::repo::{Mode, Repo};
use cairn_store::service::{self, LoadOutcome, Options, Pick, Report};
use cairn_store::servicefile::{ServiceFile, valid_revision};
use clap::Subcommand;

use super::Global;
use crate::ui;

pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

#[derive(clap::Args)]
#[command(
    after_help = "The service file (--config, CAIRN_CONFIG, default /etc/cairn/cairn.toml) \
names each service's state: directory trees (`path`) and dump/load program pairs (`dump`, `load`). \
Around an upgrade from revision A to B:\n\n  \
cairn state dump drupal --revision A      # before B is activated\n  \
cairn state load drupal --revision B      # after: loads B's state if B has any\n\n\
or, in one step that saves the current state first:\n\n  \
cairn state transition drupal --to B\n\n\
Rolling back is a transition to the old revision. A dump holds the state as it was when it ran; \
changes made after it are not in it."
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Wait up to this many seconds for another operation on the same service.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, global = true)]
    lock_wait: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Snapshot every state item of SERVICE as SERVICE@REV (all or nothing).
    Dump {
        /// Service name from the service file.
        service: String,
        /// The revision this state belongs to (e.g. a Guix store hash).
        #[arg(long, value_name = "REV")]
        revision: String,
    },
    /// Put a revision's state in place (saving the current state first). Without state for
    /// that revision, change nothing and exit 0.
    Load {
        /// Service name from the service file.
        service: String,
        /// The revision; REV~N is the N-th snapshot before the newest.
        #[arg(long, value_name = "REV", required_unless_present = "at")]
        revision: Option<String>,
        /// The newest snapshot not after this time (UTC: YYYY-MM-DD[ HH:MM[:SS]], or @SECONDS).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Save the current state under the active revision, then load REV's state (if any).
    Transition {
        /// Service name from the service file.
        service: String,
        /// The revision to move to.
        #[arg(long, value_name = "REV")]
        to: String,
        /// Label the current state with this revision instead of the recorded active one.
        #[arg(long, value_name = "REV")]
        from: Option<String>,
    },
    /// Revisions in order of activation, their snapshots, and every transition.
    History {
        /// Service name.
        service: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Services with their active revision, snapshot count and stored bytes.
    List {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

struct Say {
    bar: ui::Bar,
    quiet: bool,
}

impl cairn_store::archiver::Progress for Say {
    fn bytes(&self, n: u64) {
        cairn_store::archiver::Progress::bytes(&self.bar, n);
    }
    fn warn(&self, msg: &str) {
        cairn_store::archiver::Progress::warn(&self.bar, msg);
    }
}
impl cairn_store::restorer::Progress for Say {
    fn bytes(&self, n: u64) {
        cairn_store::restorer::Progress::bytes(&self.bar, n);
    }
    fn warn(&self, msg: &str) {
        cairn_store::restorer::Progress::warn(&self.bar, msg);
    }
}
impl Report for Say {
    fn step(&self, msg: &str) {
        if !self.quiet {
            self.bar.println(msg);
        }
    }
}

fn service_file(g: &Global) -> anyhow::Result<(ServiceFile, PathBuf)> {
    let path = g
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !path.exists() {
        bail!(
            "no service file at {} (pass --config FILE or set CAIRN_CONFIG; `cairn state --help` shows the format)",
            path.display()
        );
    }
    Ok((ServiceFile::load(&path)?, path))
}

fn open(g: &Global, file: &ServiceFile, mode: Mode) -> anyhow::Result<Repo> {
    let g2 = Global {
        repo: g.repo.clone().or_else(|| file.repository.clone()),
        password_file: g
            .password_file
            .clone()
            .or_else(|| file.password_file.clone()),
        quiet: g.quiet,
        config: None,
    };
    g2.open(mode)
}

fn pick(revision: Option<&str>, at: Option<&str>) -> anyhow::Result<Pick> {
    let at = at.map(ui::parse_time).transpose()?;
    Ok(match (revision, at) {
        (Some(r), Some(t)) => Pick::RevisionAt(r.to_string(), t),
        (None, Some(t)) => Pick::At(t),
        (Some(r), None) => match r.rsplit_once('~') {
            Some((rev, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Pick::Revision {
                    revision: rev.to_string(),
                    back: n.parse()?,
                }
            }
            _ => Pick::Revision {
                revision: r.to_string(),
                back: 0,
            },
        },
        (None, None) => bail!("give --revision or --at"),
    })
}

fn check_revision(r: &str) -> anyhow::Result<()> {
    if !valid_revision(r) {
        bail!(
            "revision {r:?} may not be empty or hold '@', '~', white space or control characters"
        );
    }
    Ok(())
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<u8> {
    match &a.cmd {
        Cmd::Dump { revision, .. } => check_revision(revision)?,
        Cmd::Transition { to, from, .. } => {
            check_revision(to)?;
            if let Some(f) = from {
                check_revision(f)?;
            }
        }
        Cmd::Load {
            revision: Some(r), ..
        } => check_revision(
            r.rsplit_once('~')
                .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
                .map_or(r, |(r, _)| r),
        )?,
        _ => {}
    }
    let (file, path) = service_file(g)?;
    let opts = Options {
        lock_wait: Duration::from_secs(a.lock_wait),
    };
    let say = || Say {
        bar: ui::Bar::new(g.quiet, "state"),
        quiet: g.quiet,
    };
    match a.cmd {
        Cmd::Dump { service, revision } => {
            let svc = file
                .service(&service)
                .with_context(|| format!("in {}", path.display()))?;
            let repo = open(g, &file, Mode::Write)?;
            let s = say();
            let r = service::dump(&repo, svc, &revision, &opts, &s);
            s.bar.finish();
            r?;
        }
        Cmd::Load {
            service,
            revision,
            at,
        } => {
            let svc = file
                .service(&service)
                .with_context(|| format!("in {}", path.display()))?;
            let which = pick(revision.as_deref(), at.as_deref())?;
            let repo = open(g, &file, Mode::Write)?;
            let s = say();
            let r = service::load(&repo, svc, &which, &opts, &s);
            s.bar.finish();
            if let LoadOutcome::Loaded { saved, .. } = r? {
                s.step(&format!(
                    "the state as it was before is in snapshot {}",
                    saved.short()
                ));
            }
        }
        Cmd::Transition { service, to, from } => {
            let svc = file
                .service(&service)
                .with_context(|| format!("in {}", path.display()))?;
            let repo = open(g, &file, Mode::Write)?;
            let s = say();
            let r = service::transition(&repo, svc, &to, from.as_deref(), &opts, &s);
            s.bar.finish();
            r?;
        }
        Cmd::History { service, json } => {
            let repo = open(g, &file, Mode::Read)?;
            history(&repo, &service, json)?;
        }
        Cmd::List { json } => {
            let repo = open(g, &file, Mode::Read)?;
            list(&repo, &file, json)?;
        }
    }
    Ok(crate::exit::OK)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Dump => "dump",
        Kind::Load => "load",
        Kind::Transition => "transition",
    }
}

fn history(repo: &Repo, service: &str, json: bool) -> anyhow::Result<()> {
    let evs = shown_events(events::list(repo, Some(service))?);
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.service.as_deref() == Some(service))
        .collect();
    if evs.is_empty() && snaps.is_empty() {
        bail!("no state and no history for service {service:?} in this repository");
    }
    // Revisions in order of first activation; revisions only ever dumped follow, oldest first.
    let mut order: Vec<String> = Vec::new();
    for e in evs.iter().filter(|e| e.activates()) {
        if let Some(to) = &e.to
            && !order.contains(to)
        {
            order.push(to.clone());
        }
    }
    for (_, s) in &snaps {
        if let Some(r) = &s.revision
            && !order.contains(r)
        {
            order.push(r.clone());
        }
    }
    let active = events::active_revision(&evs);
    if json {
        let revisions: Vec<_> = order
            .iter()
            .map(|r| {
                let activated: Vec<i64> =
                    evs.iter().filter(|e| e.activates() && e.to.as_deref() == Some(r)).map(|e| e.time_ns).collect();
                let s: Vec<_> = snaps
                    .iter()
                    .filter(|(_, s)| s.revision.as_deref() == Some(r))
                    .map(|(id, s)| {
                        serde_json::json!({"id": id.to_hex(), "time_ns": s.time_ns, "bytes": s.summary.bytes,
                            "added_bytes": s.summary.added_bytes, "tags": s.tags})
                    })
                    .collect();
                serde_json::json!({"revision": r, "activated_ns": activated, "snapshots": s})
            })
            .collect();
        let transitions: Vec<_> = evs
            .iter()
            .filter(|e| e.kind != Kind::Dump)
            .map(|e| {
                serde_json::json!({"kind": kind_name(e.kind), "from": e.from, "to": e.to, "time_ns": e.time_ns,
                    "outcome": e.outcome, "loaded": e.snapshot.map(|i| i.to_hex()), "saved": e.saved.map(|i| i.to_hex())})
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::json!({"service": service, "active": active, "revisions": revisions, "transitions": transitions})
        );
        return Ok(());
    }
    crate::outln!(
        "{service}: active revision {}",
        active.as_deref().unwrap_or("(none recorded)")
    );
    for r in &order {
        let mark = if Some(r) == active.as_ref() {
            " (active)"
        } else {
            ""
        };
        crate::outln!("\nrevision {r}{mark}");
        for (id, s) in snaps
            .iter()
            .filter(|(_, s)| s.revision.as_deref() == Some(r))
        {
            crate::outln!(
                "  {}  {}  {:>10} of state, {:>10} added{}",
                ui::time(s.time_ns),
                id.short(),
                ui::size(s.summary.bytes),
                ui::size(s.summary.added_bytes),
                if s.tags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", s.tags.join(","))
                }
            );
        }
    }
    let moves: Vec<_> = evs.iter().filter(|e| e.kind != Kind::Dump).collect();
    if !moves.is_empty() {
        crate::outln!("\ntransitions");
        for e in moves {
            crate::outln!(
                "  {}  {:<10} {} -> {}  {}",
                ui::time(e.time_ns),
                kind_name(e.kind),
                e.from.as_deref().unwrap_or("?"),
                e.to.as_deref().unwrap_or("?"),
                e.outcome
            );
        }
    }
    Ok(())
}

/// The journal as people read it: the marker a load writes before it changes the live
/// state is left out when the load's own event follows it, and otherwise shown as the
/// interruption it records.
fn shown_events(evs: Vec<events::Event>) -> Vec<events::Event> {
    let mut out: Vec<events::Event> = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        if e.outcome == events::STARTED {
            let ended = evs.get(i + 1).is_some_and(|n| {
                n.kind == e.kind
                    && n.to == e.to
                    && n.snapshot == e.snapshot
                    && n.outcome != events::STARTED
            });
            if ended {
                continue;
            }
            let mut e = e.clone();
            e.outcome = if i + 1 == evs.len() {
                "interrupted: the next state command puts the saved state back".into()
            } else {
                "interrupted: the saved state was put back".into()
            };
            out.push(e);
        } else {
            out.push(e.clone());
        }
    }
    out
}

fn list(repo: &Repo, file: &ServiceFile, json: bool) -> anyhow::Result<()> {
    let evs = events::list(repo, None)?;
    let mut rows: BTreeMap<String, (u64, u64)> =
        file.services.keys().map(|k| (k.clone(), (0, 0))).collect();
    for (_, s) in repo.snapshots()? {
        if let Some(svc) = s.service {
            let r = rows.entry(svc).or_default();
            r.0 += 1;
            r.1 += s.summary.added_bytes;
        }
    }
    let active = |svc: &str| {
        let mine: Vec<_> = evs.iter().filter(|e| e.service == svc).cloned().collect();
        events::active_revision(&mine)
    };
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(k, (n, b))| serde_json::json!({"service": k, "active": active(k), "snapshots": n, "stored_bytes": b}))
            .collect();
        crate::outln!("{}", serde_json::json!({ "services": list }));
        return Ok(());
    }
    crate::outln!(
        "{:<20} {:<24} {:>9} {:>12}",
        "service",
        "active revision",
        "snapshots",
        "stored"
    );
    for (k, (n, b)) in &rows {
        crate::outln!(
            "{:<20} {:<24} {:>9} {:>12}",
            k,
            active(k).unwrap_or_else(|| "-".into()),
            n,
            ui::size(*b)
        );
    }
    Ok(())
}
