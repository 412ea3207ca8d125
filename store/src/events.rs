//! The service journal: one sealed JSON file per event under `events/`, so which revision of a
//! service is active, and every transition with its outcome, is kept (encrypted) in the
//! repository beside the state itself. Spec: `format-spec/09-events.md`.

use serde::{Deserialize, Serialize};

use crate::id::SnapshotId;
#[cfg(feature = "rocksdb")]
use crate::{
    crypto::random_array,
    envelope::{self, Magic},
    error::{Error, Result},
    repo::{Repo, read_bounded},
};

/// Longest outcome text written (the reader's limit for a whole event file is 64 KiB).
#[cfg(feature = "rocksdb")]
const MAX_OUTCOME: usize = 4096;
/// Event document version.
pub const EVENT_VERSION: u32 = 1;

/// The outcome of the marker a load or transition writes before it changes the live state;
/// the event that ends it follows. A marker that is a service's newest event is a load
/// that was interrupted.
pub const STARTED: &str = "started";

/// The outcome of the event that ends the recovery of an interrupted load when no revision
/// was active before it (nothing becomes active).
pub const RECOVERED: &str = "recovered";

/// What happened to a service.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `state dump`: state saved under a revision.
    Dump,
    /// `state load`: a revision's state put in place (or none existed) and the revision made active.
    Load,
    /// `state transition`: current state saved, then the target revision loaded and made active.
    Transition,
}

/// One journal entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Document version.
    pub version: u32,
    /// When it finished, ns since the epoch.
    pub time_ns: i64,
    /// The service.
    pub service: String,
    /// What was done.
    pub kind: Kind,
    /// The revision active before (for loads and transitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The revision dumped, or made active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The snapshot written (dump) or loaded (load, transition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// The snapshot of the state as it was before a load or transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SnapshotId>,
    /// "ok", or what failed.
    pub outcome: String,
    /// Host that did it.
    pub host: String,
}

impl Event {
    /// A new event of `kind` for `service`, now.
    pub fn new(service: &str, kind: Kind) -> Self {
        Self {
            version: EVENT_VERSION,
            time_ns: crate::now_ns(),
            service: service.into(),
            kind,
            from: None,
            to: None,
            snapshot: None,
            saved: None,
            outcome: "ok".into(),
            host: crate::fsmeta::hostname(),
        }
    }

    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }

    /// Whether it made `to` the active revision.
    pub fn activates(&self) -> bool {
        self.ok() && matches!(self.kind, Kind::Load | Kind::Transition)
    }
}

/// Writes an event.
#[cfg(feature = "rocksdb")]
pub fn record(repo: &Repo, ev: &Event) -> Result<()> {
    let mut ev = ev.clone();
    // The time is when it finished, and the outcome is bounded so readers never refuse it.
    ev.time_ns = crate::now_ns();
    if ev.outcome.len() > MAX_OUTCOME {
        let mut cut = MAX_OUTCOME;
        while !ev.outcome.is_char_boundary(cut) {
            cut -= 1;
        }
        ev.outcome.truncate(cut);
        ev.outcome.push_str(" [...]");
    }
    let json = serde_json::to_vec(&ev).expect("serialises");
    let sealed = envelope::seal_file(repo.keys(), Magic::Event, &json);
    repo.backend().write(
        &format!("events/{}", hex::encode(random_array::<16>())),
        &sealed,
    )
}

/// Every event, oldest first; only `service`'s when given.
#[cfg(feature = "rocksdb")]
pub fn list(repo: &Repo, service: Option<&str>) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for name in repo.backend().list("events")? {
        let bytes = read_bounded(repo.backend().as_ref(), &name, 64 * 1024)?;
        let json = envelope::open_file(repo.keys(), Magic::Event, &bytes, &name)?;
        let ev: Event = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(&name, format!("document: {e}")))?;
        if ev.version > EVENT_VERSION {
            return Err(Error::NewerFormat {
                what: name,
                found: ev.version,
                supported: EVENT_VERSION,
            });
        }
        if service.is_none_or(|s| s == ev.service) {
            out.push(ev);
        }
    }
    out.sort_by_key(|e| e.time_ns);
    Ok(out)
}

/// The revision the newest successful load or transition made active.
pub fn active_revision(events: &[Event]) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|e| e.activates())
        .and_then(|e| e.to.clone())
}
