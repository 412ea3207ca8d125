//! Typed 32-byte identifiers, so a pack id cannot be passed where a blob id is meant.

use std::fmt;

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
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
