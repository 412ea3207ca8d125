//! Trees: one directory's entries, encoded as a blob. Spec: `format-spec/06-trees.md`.
//!
//! The decoder checks structure and bounds only; whether a name is safe to create on disk is
//! the restorer's question (see `restorer.rs`), so a hostile name gets a precise refusal there.

use crate::codec::{Put, Reader};
use crate::error::Result;
use crate::id::BlobId;

/// Tree encoding version.
pub const TREE_VERSION: u8 = 1;
/// Longest name accepted.
pub const MAX_NAME: usize = 4096;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file: its data as an ordered list of parts.
    File(Vec<Part>),
    /// A directory: the id of its tree blob.
    Dir(BlobId),
    /// A symbolic link and its target, as raw bytes; never followed.
    Symlink(Vec<u8>),
    /// A hard link to a file stored earlier in the same snapshot, by its path from the root.
    HardLink(Vec<Vec<u8>>),
    /// A character device.
    CharDevice(u64),
    /// A block device.
    BlockDevice(u64),
    /// A named pipe.
    Fifo,
}

/// A part that is a chunk stored on its own, as a data blob.
pub const PART_CHUNK: u8 = 0;
/// A part that is a chunk stored inside a delta run (found through the index's member
/// records; see `delta.rs`).
pub const PART_IN_RUN: u8 = 1;

/// One stretch of a file's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// [`PART_CHUNK`] or [`PART_IN_RUN`].
    pub kind: u8,
    /// The blob holding it.
    pub id: BlobId,
    /// Its length in bytes.
    pub len: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name, raw bytes (not necessarily UTF-8).
    pub name: Vec<u8>,
    /// Kind and content.
    pub node: Node,
    /// Permission and type bits as `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch (for change detection).
    pub ctime_ns: i64,
    /// Inode number (for change detection).
    pub ino: u64,
    /// Logical size in bytes (files: the data length).
    pub size: u64,
    /// Extended attributes, name → value.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries, sorted by name.
    pub entries: Vec<Entry>,
}

const K_FILE: u8 = 1;
const K_DIR: u8 = 2;
const K_SYMLINK: u8 = 3;
const K_HARDLINK: u8 = 4;
const K_CHAR: u8 = 5;
const K_BLOCK: u8 = 6;
const K_FIFO: u8 = 7;

fn put_bytes16(v: &mut Vec<u8>, b: &[u8]) {
    v.put_u16(b.len() as u16);
    v.extend_from_slice(b);
}

impl Tree {
    /// The blob plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![TREE_VERSION];
        v.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            put_bytes16(&mut v, &e.name);
            let kind = match &e.node {
                Node::File(_) => K_FILE,
                Node::Dir(_) => K_DIR,
                Node::Symlink(_) => K_SYMLINK,
                Node::HardLink(_) => K_HARDLINK,
                Node::CharDevice(_) => K_CHAR,
                Node::BlockDevice(_) => K_BLOCK,
                Node::Fifo => K_FIFO,
            };
            v.push(kind);
            v.put_u32(e.mode);
            v.put_u32(e.uid);
            v.put_u32(e.gid);
            v.put_i64(e.mtime_ns);
            v.put_i64(e.ctime_ns);
            v.put_u64(e.ino);
            v.put_u64(e.size);
            match &e.node {
                Node::File(parts) => {
                    v.put_u32(parts.len() as u32);
                    for p in parts {
                        v.push(p.kind);
                        v.extend_from_slice(&p.id.0);
                        v.put_u32(p.len);
                    }
                }
                Node::Dir(id) => v.extend_from_slice(&id.0),
                Node::Symlink(t) => put_bytes16(&mut v, t),
                Node::HardLink(path) => {
                    v.put_u16(path.len() as u16);
                    for c in path {
                        put_bytes16(&mut v, c);
                    }
                }
                Node::CharDevice(d) | Node::BlockDevice(d) => v.put_u64(*d),
                Node::Fifo => {}
            }
            v.put_u16(e.xattrs.len() as u16);
            for (k, val) in &e.xattrs {
                put_bytes16(&mut v, k);
                v.put_u32(val.len() as u32);
                v.extend_from_slice(val);
            }
        }
        v
    }

    /// Decodes a tree blob; `what` names it in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(buf, what);
        let version = r.u8()?;
        if version != TREE_VERSION {
            return Err(crate::Error::NewerFormat {
                what: what.into(),
                found: version.into(),
                supported: TREE_VERSION.into(),
            });
        }
        let n = r.count(2 + 1 + 44 + 2)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let name = bytes16(&mut r)?;
            let kind = r.u8()?;
            let mode = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let mtime_ns = r.i64()?;
            let ctime_ns = r.i64()?;
            let ino = r.u64()?;
            let size = r.u64()?;
            let node = match kind {
                K_FILE => {
                    let np = r.count(37)?;
                    let mut parts = Vec::with_capacity(np);
                    for _ in 0..np {
                        let kind = r.u8()?;
                        if kind > PART_IN_RUN {
                            return Err(crate::Error::NewerFormat {
                                what: what.into(),
                                found: kind.into(),
                                supported: PART_IN_RUN.into(),
                            });
                        }
                        parts.push(Part {
                            kind,
                            id: BlobId(r.array()?),
                            len: r.u32()?,
                        });
                    }
                    Node::File(parts)
                }
                K_DIR => Node::Dir(BlobId(r.array()?)),
                K_SYMLINK => Node::Symlink(bytes16(&mut r)?),
                K_HARDLINK => {
                    let nc = r.u16()? as usize;
                    if nc * 2 > r.remaining() {
                        return Err(r.err("hard link path longer than the tree"));
                    }
                    let mut path = Vec::with_capacity(nc);
                    for _ in 0..nc {
                        path.push(bytes16(&mut r)?);
                    }
                    Node::HardLink(path)
                }
                K_CHAR => Node::CharDevice(r.u64()?),
                K_BLOCK => Node::BlockDevice(r.u64()?),
                K_FIFO => Node::Fifo,
                other => return Err(r.err(format!("unknown entry kind {other}"))),
            };
            let nx = r.u16()? as usize;
            if nx * 6 > r.remaining() {
                return Err(r.err("more xattrs than the tree can hold"));
            }
            let mut xattrs = Vec::with_capacity(nx);
            for _ in 0..nx {
                let k = bytes16(&mut r)?;
                let vlen = r.u32()? as usize;
                xattrs.push((k, r.bytes(vlen)?.to_vec()));
            }
            entries.push(Entry {
                name,
                node,
                mode,
                uid,
                gid,
                mtime_ns,
                ctime_ns,
                ino,
                size,
                xattrs,
            });
        }
        r.finish()?;
        Ok(Tree { entries })
    }
}

fn bytes16(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    let n = r.u16()? as usize;
    if n > MAX_NAME {
        return Err(r.err(format!("name of {n} bytes exceeds the limit")));
    }
    Ok(r.bytes(n)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], node: Node) -> Entry {
        Entry {
            name: name.to_vec(),
            node,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            mtime_ns: -5,
            ctime_ns: 7,
            ino: 9,
            size: 3,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let t = Tree {
            entries: vec![
                entry(
                    b"a",
                    Node::File(vec![Part {
                        kind: 0,
                        id: BlobId([1; 32]),
                        len: 3,
                    }]),
                ),
                entry(b"b", Node::Dir(BlobId([2; 32]))),
                entry(b"c\xff", Node::Symlink(b"../x".to_vec())),
                entry(b"d", Node::HardLink(vec![b"a".to_vec()])),
                entry(b"e", Node::CharDevice(5)),
                entry(b"f", Node::BlockDevice(6)),
                entry(b"g", Node::Fifo),
            ],
        };
        let enc = t.encode();
        assert_eq!(Tree::decode(&enc, "t").unwrap(), t);
        for cut in 0..enc.len() {
            assert!(
                Tree::decode(&enc[..cut], "t").is_err(),
                "prefix {cut} decoded"
            );
        }
    }

    #[test]
    fn hostile_count_does_not_allocate() {
        let mut v = vec![TREE_VERSION];
        v.put_u32(u32::MAX);
        assert!(Tree::decode(&v, "t").is_err());
    }
}
