//! Typed 32-byte identifiers, so a pack id cannot be passed where a blob id is meant.

use std::fmt;

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| Error::Invalid(format!("not a {}: {s:?}", stringify!($name))))?;
                Ok(Self(out))
            }
            /// The id as 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, as shown to people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::hash::Hash for $name {
            // Ids are uniformly random: eight of their bytes are as good a hash as all 32.
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// A blob: keyed BLAKE3 of its plaintext (chunk or tree).
    BlobId
);
id_type!(
    /// A pack file: unkeyed BLAKE3 of the pack's bytes as stored.
    PackId
);
id_type!(
    /// A snapshot file: unkeyed BLAKE3 of the file's bytes as stored.
    SnapshotId
);

/// A hasher for maps keyed by ids: ids are already uniformly random (keyed BLAKE3), so their
/// first eight bytes are a perfect hash, and SipHash over 32 bytes would only cost time.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuild = std::hash::BuildHasherDefault<IdHasher>;
/// A map keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuild>;
/// A set of ids.
pub type IdSet<K> = std::collections::HashSet<K, IdBuild>;
