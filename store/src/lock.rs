//! Repository locks: sealed files under `locks/`. Writers (backup, state dump) hold shared
//! locks; commands that delete data (prune, index rebuild) hold an exclusive one. A lock whose
//! process is gone (same host, PID not running) is stale and removed by whoever finds it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::crypto::{Keys, random_array};
use crate::envelope::{self, Magic};
use crate::error::{Error, Result};

/// What a lock file says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host of the holder.
    pub host: String,
    /// PID of the holder.
    pub pid: u32,
    /// When it was taken, ns since the epoch.
    pub time_ns: i64,
    /// Exclusive over the whole repository, or shared.
    pub exclusive: bool,
    /// The command holding it.
    pub command: String,
    /// For a service lock: a keyed hash of the service name (hex). Two locks with the same
    /// scope conflict; scoped locks are otherwise shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What kind of lock to take.
#[derive(Clone, Debug)]
pub struct Request {
    /// Exclusive over the whole repository (index rebuild, prune) or shared (backup).
    pub exclusive: bool,
    /// A scope (service) that only one holder may have at a time.
    pub scope: Option<String>,
    /// The command, shown to whoever finds the lock.
    pub command: String,
    /// How long to keep trying while another process holds a conflicting lock.
    pub wait: std::time::Duration,
}

/// A held lock; released when dropped.
pub struct Lock {
    backend: Arc<dyn Backend>,
    name: String,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.backend.remove(&self.name);
    }
}

pub use crate::fsmeta::hostname;

/// Takes a shared or exclusive repository lock, without waiting.
pub fn acquire(
    backend: &Arc<dyn Backend>,
    keys: &Keys,
    exclusive: bool,
    command: &str,
) -> Result<Lock> {
    let req = Request {
        exclusive,
        scope: None,
        command: command.into(),
        wait: Default::default(),
    };
    acquire_with(backend, keys, &req)
}

fn conflicts(a: &LockInfo, b: &LockInfo) -> bool {
    a.exclusive || b.exclusive || (a.scope.is_some() && a.scope == b.scope)
}

/// Takes a lock, or fails with [`Error::Locked`] naming the holder once `req.wait` has passed.
///
/// Every taker writes its lock file first, then reads the others, and backs off (removes its
/// own and tries again) when any conflicting lock is there, older or younger. So two takers
/// can never both go ahead: whichever lists second sees the other's file, since each writes
/// its own (durably) before it lists. (An "older wins" rule would let a slow writer's lock
/// appear after a younger taker had already listed, and both would proceed.)
pub fn acquire_with(backend: &Arc<dyn Backend>, keys: &Keys, req: &Request) -> Result<Lock> {
    // Two takers that start together both see each other and both back off; the random
    // pause lets one of them through, so even a no-wait request tries for a moment.
    let deadline = std::time::Instant::now() + req.wait.max(std::time::Duration::from_secs(1));
    loop {
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            time_ns: crate::now_ns(),
            exclusive: req.exclusive,
            command: req.command.clone(),
            scope: req.scope.clone(),
        };
        let name = format!("locks/{}", hex::encode(random_array::<16>()));
        let sealed = envelope::seal_file(
            keys,
            Magic::Lock,
            &serde_json::to_vec(&info).expect("serialises"),
        );
        backend.write(&name, &sealed)?;
        let lock = Lock {
            backend: backend.clone(),
            name,
        };
        match first_conflict(backend, keys, &lock.name, &info)? {
            None => return Ok(lock),
            Some(held) => {
                drop(lock);
                if std::time::Instant::now() >= deadline {
                    let what = match (&held.scope, held.exclusive) {
                        (_, true) => "an exclusive lock",
                        (Some(s), false) if s == "prune" => "the prune lock",
                        (Some(_), false) => "the service's lock",
                        (None, false) => "a lock",
                    };
                    return Err(Error::Locked(format!(
                        "`{}` (pid {} on {}, since {}s) holds {what}",
                        held.command,
                        held.pid,
                        held.host,
                        (crate::now_ns() - held.time_ns).max(0) / 1_000_000_000
                    )));
                }
                let jitter = u64::from(random_array::<1>()[0]);
                std::thread::sleep(std::time::Duration::from_millis(50 + jitter));
            }
        }
    }
}

/// Every lock held, by file name, with stale ones (same host, process gone) removed on the
/// way. Lock files that cannot be read or opened are passed over.
pub fn held(backend: &Arc<dyn Backend>, keys: &Keys) -> Result<Vec<(String, LockInfo)>> {
    let me = hostname();
    let mut out = Vec::new();
    for name in backend.list("locks")? {
        let Ok(bytes) = crate::repo::read_bounded(backend.as_ref(), &name, 64 * 1024) else {
            continue;
        };
        let Ok(json) = envelope::open_file(keys, Magic::Lock, &bytes, &name) else {
            continue;
        };
        let Ok(info) = serde_json::from_slice::<LockInfo>(&json) else {
            continue;
        };
        if info.host == me && !crate::fsmeta::pid_alive(info.pid) {
            backend.remove(&name)?;
            continue;
        }
        out.push((name, info));
    }
    Ok(out)
}

/// A lock that conflicts with ours.
fn first_conflict(
    backend: &Arc<dyn Backend>,
    keys: &Keys,
    mine: &str,
    info: &LockInfo,
) -> Result<Option<LockInfo>> {
    Ok(held(backend, keys)?
        .into_iter()
        .find(|(name, l)| name != mine && conflicts(l, info))
        .map(|(_, l)| l))
}
