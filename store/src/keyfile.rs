//! Key files: the master key wrapped under a password. Spec: `format-spec/02-crypto.md`.
//!
//! ```text
//! "CAIRNKEY" | version u16 | kdf u16 (1 = Argon2id v0x13) | m_kib u32 | t u32 | p u32 | salt [32]
//! sealed payload: master key [32] | created i64 ns | host (u16 len + bytes) | user (u16 len + bytes)
//!                 version 2 only: n u16 | n generation keys [32] (generations 1..=n)
//! ```
//! Version 1 is written while the repository has no generation keys (before any `key
//! rotate`), so such key files are byte for byte what they always were.
//! The payload is AES-256-GCM under the Argon2id output, nonce 0, the 56-byte header as
//! associated data. Each key file has its own salt, so each wrapping key is used once.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::codec::{Put, Reader};
use crate::config::KdfParams;
use crate::crypto::{MasterKey, ObjectKey, random_array};
use crate::error::{Error, Result};

/// Largest key file accepted (the payload holds a key, a time and two short names).
pub const MAX_KEY_FILE: u64 = 4096;
/// Length of the plaintext header.
pub const KEY_HEADER_LEN: usize = 56;
const MAGIC: &[u8; 8] = b"CAIRNKEY";
const VERSION: u16 = 2;
/// Most generation keys a key file holds (the file stays under [`MAX_KEY_FILE`]).
pub const MAX_GENERATIONS: usize = 96;
const KDF_ARGON2ID: u16 = 1;
/// Bounds that keep a hostile key file from demanding unbounded memory or time.
const MAX_M_KIB: u32 = 4 * 1024 * 1024;
const MAX_T: u32 = 64;
const MAX_P: u32 = 64;

/// A decoded key file.
pub struct KeyFile {
    /// KDF parameters it was written with.
    pub kdf: KdfParams,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// Host that created it.
    pub host: String,
    /// User that created it.
    pub user: String,
}

/// The KDF parameters every reader accepts; the writer refuses others, so no key file is
/// ever written that cannot be opened.
pub fn check_bounds(p: KdfParams) -> std::result::Result<(), String> {
    if p.m_kib > MAX_M_KIB
        || p.t > MAX_T
        || p.p > MAX_P
        || p.t == 0
        || p.p == 0
        || p.m_kib < 8 * p.p
    {
        return Err(format!(
            "KDF parameters out of bounds: {p:?} (memory 8*p..={MAX_M_KIB} KiB, passes 1..={MAX_T}, lanes 1..={MAX_P})"
        ));
    }
    Ok(())
}

/// Derives the wrapping key from a password.
fn wrapping_key(password: &[u8], kdf: KdfParams, salt: &[u8; 32]) -> Result<ObjectKey> {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| Error::Invalid(format!("Argon2id parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out[..])
        .map_err(|e| Error::Invalid(format!("Argon2id: {e}")))?;
    Ok(ObjectKey::from_bytes(*out))
}

/// Writes a key file wrapping `master` (and the generation keys) under `password`.
pub fn create(
    master: &MasterKey,
    generations: &[MasterKey],
    password: &[u8],
    kdf: KdfParams,
    host: &str,
    user: &str,
    now_ns: i64,
) -> Result<Vec<u8>> {
    create_with_salt(
        master,
        generations,
        password,
        kdf,
        host,
        user,
        now_ns,
        random_array(),
    )
}

/// [`create`] with a given salt (test vectors).
#[allow(clippy::too_many_arguments)]
pub fn create_with_salt(
    master: &MasterKey,
    generations: &[MasterKey],
    password: &[u8],
    kdf: KdfParams,
    host: &str,
    user: &str,
    now_ns: i64,
    salt: [u8; 32],
) -> Result<Vec<u8>> {
    check_bounds(kdf).map_err(Error::Invalid)?;
    if generations.len() > MAX_GENERATIONS {
        return Err(Error::Invalid(format!(
            "a key file holds at most {MAX_GENERATIONS} key generations"
        )));
    }
    let mut head = Vec::with_capacity(KEY_HEADER_LEN);
    head.extend_from_slice(MAGIC);
    head.put_u16(if generations.is_empty() { 1 } else { VERSION });
    head.put_u16(KDF_ARGON2ID);
    head.put_u32(kdf.m_kib);
    head.put_u32(kdf.t);
    head.put_u32(kdf.p);
    head.extend_from_slice(&salt);
    let mut payload = Zeroizing::new(Vec::new());
    payload.extend_from_slice(master.as_bytes());
    payload.put_i64(now_ns);
    for s in [host, user] {
        let b = &s.as_bytes()[..s.len().min(1024)];
        payload.put_u16(b.len() as u16);
        payload.extend_from_slice(b);
    }
    if !generations.is_empty() {
        payload.put_u16(generations.len() as u16);
        for g in generations {
            payload.extend_from_slice(g.as_bytes());
        }
    }
    let key = wrapping_key(password, kdf, &salt)?;
    let sealed = key.seal(0, &head, &payload);
    head.extend_from_slice(&sealed);
    Ok(head)
}

/// Reads the header of a key file without the password.
pub fn params(bytes: &[u8], what: &str) -> Result<(KdfParams, [u8; 32])> {
    let mut r = Reader::new(bytes, what);
    if &r.array::<8>()? != MAGIC {
        return Err(Error::corrupt(what, "not a cairn key file (bad magic)"));
    }
    let v = r.u16()?;
    if v == 0 {
        return Err(Error::corrupt(what, "key file version 0"));
    }
    if v > VERSION {
        return Err(Error::NewerFormat {
            what: what.into(),
            found: v.into(),
            supported: VERSION.into(),
        });
    }
    let kdf = r.u16()?;
    if kdf != KDF_ARGON2ID {
        return Err(Error::NewerFormat {
            what: what.into(),
            found: kdf.into(),
            supported: KDF_ARGON2ID.into(),
        });
    }
    let p = KdfParams {
        m_kib: r.u32()?,
        t: r.u32()?,
        p: r.u32()?,
    };
    check_bounds(p).map_err(|why| Error::corrupt(what, why))?;
    Ok((p, r.array()?))
}

/// What a key file wraps: the master key and the generation keys (1, 2, ... in order).
pub struct Unwrapped {
    /// The master key.
    pub master: MasterKey,
    /// Generation keys, oldest first.
    pub generations: Vec<MasterKey>,
}

/// Unwraps the master key; `Ok(None)` when the password does not open this key file.
pub fn open(bytes: &[u8], password: &[u8], what: &str) -> Result<Option<(Unwrapped, KeyFile)>> {
    let (kdf, salt) = params(bytes, what)?;
    if bytes.len() < KEY_HEADER_LEN + crate::crypto::TAG_LEN {
        return Err(Error::corrupt(what, "truncated"));
    }
    let key = wrapping_key(password, kdf, &salt)?;
    let Some(payload) = key.open(0, &bytes[..KEY_HEADER_LEN], &bytes[KEY_HEADER_LEN..]) else {
        return Ok(None);
    };
    let payload = Zeroizing::new(payload);
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let (unwrapped, created_ns, host, user) = decode_payload(&payload, version, what)?;
    Ok(Some((
        unwrapped,
        KeyFile {
            kdf,
            created_ns,
            host,
            user,
        },
    )))
}

/// Parses an opened key-file payload of `version`: what it wraps, the creation time, host
/// and user.
pub fn decode_payload(
    payload: &[u8],
    version: u16,
    what: &str,
) -> Result<(Unwrapped, i64, String, String)> {
    let mut r = Reader::new(payload, what);
    let master = MasterKey::from_bytes(r.array()?);
    let created_ns = r.i64()?;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let n = r.u16()? as usize;
        strings.push(String::from_utf8_lossy(r.bytes(n)?).into_owned());
    }
    let mut generations = Vec::new();
    if version >= 2 {
        let n = r.u16()? as usize;
        if n == 0 || n > MAX_GENERATIONS {
            return Err(Error::corrupt(
                what,
                format!("{n} key generations (1..={MAX_GENERATIONS} in a version-2 key file)"),
            ));
        }
        for _ in 0..n {
            generations.push(MasterKey::from_bytes(r.array()?));
        }
    }
    r.finish()?;
    let user = strings.pop().unwrap_or_default();
    let host = strings.pop().unwrap_or_default();
    Ok((
        Unwrapped {
            master,
            generations,
        },
        created_ns,
        host,
        user,
    ))
}
