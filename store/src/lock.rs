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
    /// Exclusive or shared.
    pub exclusive: bool,
    /// The command holding it.
    pub command: String,
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

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Takes a lock, or fails with [`Error::Locked`] naming the holder.
pub fn acquire(
    backend: &Arc<dyn Backend>,
    keys: &Keys,
    exclusive: bool,
    command: &str,
) -> Result<Lock> {
    let info = LockInfo {
        host: hostname(),
        pid: std::process::id(),
        time_ns: crate::now_ns(),
        exclusive,
        command: command.to_string(),
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
    for other in backend.list("locks")? {
        if other == lock.name {
            continue;
        }
        let Ok(bytes) = crate::repo::read_bounded(backend.as_ref(), &other, 64 * 1024) else {
            continue;
        };
        let Ok(json) = envelope::open_file(keys, Magic::Lock, &bytes, &other) else {
            continue;
        };
        let Ok(held) = serde_json::from_slice::<LockInfo>(&json) else {
            continue;
        };
        if held.host == info.host && !crate::fsmeta::pid_alive(held.pid) {
            backend.remove(&other)?;
            continue;
        }
        if held.exclusive || exclusive {
            return Err(Error::Locked(format!(
                "`{}` (pid {} on {}) holds {} lock",
                held.command,
                held.pid,
                held.host,
                if held.exclusive { "an exclusive" } else { "a" }
            )));
        }
    }
    Ok(lock)
}
