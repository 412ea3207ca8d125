#!/usr/bin/env python3
"""Independent check of Cairn's format test vectors, written from format-spec/ alone.

It re-derives every success vector in vectors/ (keys, ids, the gear table, chunk cut points,
sealed files, the journal event, the prune record, the pack, the tree, the key file) and checks that every failure vector is
refused for the stated reason, without using any Cairn code.

Needs: blake3, cryptography, argon2-cffi, zstandard (PyPI). For example:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install blake3 cryptography argon2-cffi zstandard
    /tmp/venv/bin/python format-spec/verify_vectors.py

Exits 0 and prints "N passed, 0 failed" when every vector checks.
"""

import json
import math
import os
import struct
import sys

import blake3
import zstandard
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")

# --- 02-crypto.md ------------------------------------------------------------------------------

CONTEXTS = {
    "chunk-id-key": "cairn 2026 chunk id",
    "tree-id-key": "cairn 2026 tree id",
    "run-id-key": "cairn 2026 run id",
    "label-key": "cairn 2026 label",
    "seal-key": "cairn 2026 seal",
    "gear-key": "cairn 2026 gear",
}



def varint(r):
    """One LEB128 varint from a Reader."""
    v, shift = 0, 0
    while True:
        (b,) = r.unpack("B")
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v
        if shift >= 64:
            raise Refused("damaged", "varint too long")


def apply_edits(edits, prefix, run_len):
    """A version 2 delta run: edits (literal length, copy length, zigzag copy start relative
    to the last copy's end) applied to the prefix, literals taken in order from the end."""
    r = Reader(edits)
    n = varint(r)
    ops, expect = [], 0
    for _ in range(n):
        lit, length, z = varint(r), varint(r), varint(r)
        start = expect + ((z >> 1) ^ -(z & 1))
        if start < 0 or start + length > len(prefix) or (0 < length < 16) or lit + length == 0:
            raise Refused("damaged", "bad edit")
        ops.append((lit, start, length))
        expect = start + length
    lits = edits[len(edits) - r.remaining():]
    out, at = bytearray(), 0
    for lit, start, length in ops:
        out += lits[at:at + lit]
        at += lit
        out += prefix[start:start + length]
    if at != len(lits) or len(out) != run_len:
        raise Refused("damaged", "edits do not add up to the run")
    return bytes(out)

def derive(master, field):
    h = blake3.blake3(derive_key_context=CONTEXTS[field])
    h.update(master)
    return h.digest()


def keyed(key, data, length=32):
    return blake3.blake3(data, key=key).digest(length=length)


def chunk_id(master, data):
    return keyed(derive(master, "chunk-id-key"), data)


def tree_id(master, data):
    return keyed(derive(master, "tree-id-key"), data)


def label_hash(master, parts):
    msg = b"".join(struct.pack("<Q", len(p)) + p for p in parts)
    return keyed(derive(master, "label-key"), msg)[:16], msg


def gear_table(master):
    xof = keyed(derive(master, "gear-key"), b"", 2048)
    return list(struct.unpack("<256Q", xof)), xof


def object_key(master, salt, key_gen=0, generations=()):
    """Generation 0 seals under the master key; generation g >= 1 under generation key g."""
    if key_gen == 0:
        return keyed(derive(master, "seal-key"), salt)
    if key_gen > len(generations):
        raise Refused("unknown-generation", f"key generation {key_gen}")
    return keyed(derive(generations[key_gen - 1], "seal-key"), salt)


def nonce(counter):
    return struct.pack("<Q", counter) + b"\0\0\0\0"


def seal(key, counter, aad, plaintext):
    return AESGCM(key).encrypt(nonce(counter), plaintext, aad)


class Refused(Exception):
    """A reader refusal: kind is 'damaged', 'newer-format' or 'wrong-password'."""

    def __init__(self, kind, why):
        super().__init__(f"{kind}: {why}")
        self.kind, self.why = kind, why


def open_(key, counter, aad, sealed, what):
    if len(sealed) < 16:
        raise Refused("damaged", f"{what}: authentication failed (too short)")
    try:
        return AESGCM(key).decrypt(nonce(counter), sealed, aad)
    except InvalidTag:
        raise Refused("damaged", f"{what}: authentication failed")


# --- 03-chunking.md ----------------------------------------------------------------------------

MASKS = {
    7: 0x0000000018035100, 8: 0x0000001800035300, 9: 0x0000019000353000,
    10: 0x0000590003530000, 11: 0x0000D90003530000, 12: 0x0000D90103530000,
    13: 0x0000D90303530000, 14: 0x0000D90313530000, 15: 0x0000D90F03530000,
    16: 0x0000D90303537000, 17: 0x0000D90703537000, 18: 0x0000D90707537000,
    19: 0x0000D91707537000, 20: 0x0000D91747537000, 21: 0x0000D91767537000,
    22: 0x0000D93767537000, 23: 0x0000D93777537000,
}
M64 = (1 << 64) - 1


def masks(avg):
    bits = math.floor(math.log2(avg) + 0.5)
    return MASKS[bits + 1], MASKS[bits - 1]


def cut(data, start, n, G, mn, avg, mx, mask_s, mask_l):
    """Length of the first chunk of data[start:start+n] (n = bytes left in the input)."""
    if n <= mn:
        return n
    end = min(n, mx)
    centre = min(avg, end)
    strict_end = 2 * (centre // 2)
    scan_end = 2 * (end // 2)
    h = 0
    i = mn
    while i < strict_end:
        h = ((h << 1) + G[data[start + i]]) & M64
        if h & mask_s == 0:
            return i
        i += 1
    while i < scan_end:
        h = ((h << 1) + G[data[start + i]]) & M64
        if h & mask_l == 0:
            return i
        i += 1
    return end


def chunk_lengths(data, G, mn, avg, mx):
    mask_s, mask_l = masks(avg)
    out, pos = [], 0
    while pos < len(data):
        k = cut(data, pos, len(data) - pos, G, mn, avg, mx, mask_s, mask_l)
        out.append(k)
        pos += k
    return out


# --- 04-sealed-objects.md ----------------------------------------------------------------------

MAGICS = {b"CAIRNCFG", b"CAIRNSNP", b"CAIRNPAK", b"CAIRNLCK", b"CAIRNEVT", b"CAIRNPRN"}


def header(magic, version, key_gen, salt):
    return magic + struct.pack("<HHI", version, 0, key_gen) + salt


def check_header(h, magic):
    if h[:8] != magic:
        raise Refused("damaged", "bad magic")
    version, _flags, key_gen = struct.unpack("<HHI", h[8:16])
    if version > 1:
        raise Refused("newer-format", f"version {version}")
    if version == 0:
        raise Refused("damaged", "version 0")
    return key_gen, h[16:48]


def open_sealed_file(master, magic, file, generations=()):
    if len(file) < 64:
        raise Refused("damaged", "truncated")
    key_gen, salt = check_header(file[:48], magic)
    return open_(object_key(master, salt, key_gen, generations), 0, file[:48], file[48:],
                 "sealed file")


# --- 09-events.md -------------------------------------------------------------------------------

MAX_EVENT_FILE = 64 << 10
EVENT_KINDS = ("dump", "load", "transition")


def is_id(v):
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def open_event(master, file):
    """Reads one events/<e> file: the checks of 09-events.md § Reading. Returns the document."""
    if len(file) > MAX_EVENT_FILE:
        raise Refused("damaged", "larger than an event file may be")
    try:
        doc = json.loads(open_sealed_file(master, b"CAIRNEVT", file))
    except ValueError as e:
        raise Refused("damaged", f"not JSON: {e}")
    if not isinstance(doc, dict):
        raise Refused("damaged", "not a JSON object")
    integer = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    string = lambda v: isinstance(v, str)  # noqa: E731
    shape = {"version": integer, "time_ns": integer, "service": string, "kind": string,
             "outcome": string, "host": string, "from": string, "to": string,
             "snapshot": is_id, "saved": is_id}
    for field, ok in shape.items():
        required = field not in ("from", "to", "snapshot", "saved")
        if field not in doc:
            if required:
                raise Refused("damaged", f"no {field}")
        elif not ok(doc[field]):
            raise Refused("damaged", f"{field} has the wrong type")
    if not (0 <= doc["version"] < 1 << 32) or not (-(1 << 63) <= doc["time_ns"] < 1 << 63):
        raise Refused("damaged", "integer out of range")
    if doc["kind"] not in EVENT_KINDS:
        raise Refused("damaged", f"kind {doc['kind']!r}")
    if doc["version"] > 1:
        raise Refused("newer-format", f"event version {doc['version']}")
    return doc


def active_revision(events):
    """events: (file name, document) pairs of one service. The active revision, or None."""
    activating = [(e["time_ns"], name.encode(), e) for name, e in events
                  if e["outcome"] == "ok" and e["kind"] in ("load", "transition")]
    if not activating:
        return None
    return max(activating, key=lambda t: t[:2])[2].get("to")


# --- 11-prune.md -------------------------------------------------------------------------------

MAX_PRUNE_FILE = 64 << 20


def open_prune(master, file):
    """Reads one prune/<r> file: the checks of 11-prune.md § Reading. Returns the document."""
    if len(file) > MAX_PRUNE_FILE:
        raise Refused("damaged", "larger than a prune record may be")
    try:
        doc = json.loads(open_sealed_file(master, b"CAIRNPRN", file))
    except ValueError as e:
        raise Refused("damaged", f"not JSON: {e}")
    if not isinstance(doc, dict):
        raise Refused("damaged", "not a JSON object")
    integer = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    for field, ok in (("version", integer), ("hidden_ns", integer),
                      ("packs", lambda v: isinstance(v, list) and all(map(is_id, v)))):
        if field not in doc:
            raise Refused("damaged", f"no {field}")
        if not ok(doc[field]):
            raise Refused("damaged", f"{field} has the wrong type")
    if not (0 <= doc["version"] < 1 << 32) or not (-(1 << 63) <= doc["hidden_ns"] < 1 << 63):
        raise Refused("damaged", "integer out of range")
    if doc["version"] > 1:
        raise Refused("newer-format", f"prune record version {doc['version']}")
    return doc


def pending(records):
    """The pending set: every pack named by any record."""
    return {bytes.fromhex(p) for doc in records for p in doc["packs"]}


# --- 05-packs.md -------------------------------------------------------------------------------

MAX_BLOB_LEN = 256 << 20
MAX_ENTRIES = 1 << 20
TOC_COUNTER = (1 << 64) - 1


def build_pack(master, salt, blobs):
    """blobs: list of (kind, id, raw_len, encoded). Returns (pack bytes, table plaintext)."""
    key = object_key(master, salt)
    h = header(b"CAIRNPAK", 1, 0, salt)
    out, entries = bytearray(h), []
    for slot, (kind, bid, raw_len, enc) in enumerate(blobs):
        sealed = seal(key, slot, bid + bytes([kind]), enc)
        entries.append(struct.pack("<BBHIIQ", kind, 0, 0, len(sealed), raw_len, len(out)) + bid)
        out += sealed
    table = struct.pack("<I", len(entries)) + b"".join(entries)
    sealed_table = seal(key, TOC_COUNTER, h, table)
    out += sealed_table + struct.pack("<I", len(sealed_table))
    return bytes(out), table


def decode_table(table, toc_offset):
    if len(table) < 4:
        raise Refused("damaged", "truncated table")
    (n,) = struct.unpack("<I", table[:4])
    if 52 * n > len(table) - 4:
        raise Refused("damaged", "count exceeds the table")
    if n > MAX_ENTRIES:
        raise Refused("damaged", "too many entries")
    if len(table) != 4 + 52 * n:
        raise Refused("damaged", "trailing bytes")
    entries, nxt = [], 48
    for i in range(n):
        e = table[4 + 52 * i: 4 + 52 * (i + 1)]
        kind, _flags, _res, stored, raw, off = struct.unpack("<BBHIIQ", e[:20])
        if kind > 2:
            raise Refused("newer-format", f"blob kind {kind}")
        if off != nxt or stored < 17 or raw > MAX_BLOB_LEN or off + stored > toc_offset:
            raise Refused("damaged", f"entry {i}")
        nxt = off + stored
        entries.append((kind, stored, raw, off, e[20:52]))
    if nxt != toc_offset:
        raise Refused("damaged", "blob area and table do not meet")
    return entries


def open_pack(master, pack):
    size = len(pack)
    if size < 72:
        raise Refused("damaged", "truncated pack")
    (L,) = struct.unpack("<I", pack[-4:])
    if L < 20 or L > size - 52:
        raise Refused("damaged", "table length")
    T = size - 4 - L
    key_gen, salt = check_header(pack[:48], b"CAIRNPAK")
    key = object_key(master, salt, key_gen)
    table = open_(key, TOC_COUNTER, pack[:48], pack[T:T + L], "pack table")
    return key, decode_table(table, T), table, T


def read_blob(master, key, slot, entry, pack):
    kind, stored, raw, off, bid = entry
    if raw > MAX_BLOB_LEN:
        raise Refused("damaged", "raw length")
    plain = open_(key, slot, bid + bytes([kind]), pack[off:off + stored], f"blob {slot}")
    comp, body = plain[0], plain[1:]
    if comp == 0:
        data = body
    elif comp == 1:
        try:
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw)
        except zstandard.ZstdError as e:
            raise Refused("damaged", f"zstd: {e}")
    else:
        raise Refused("newer-format", f"compression {comp}")
    if len(data) != raw:
        raise Refused("damaged", "length")
    want = tree_id(master, data) if kind == 1 else chunk_id(master, data)
    if want != bid:
        raise Refused("damaged", "id")
    return data


# --- 06-trees.md -------------------------------------------------------------------------------

MAX_NAME = 4096


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if n > len(self.buf) - self.pos:
            raise Refused("damaged", f"truncated at {self.pos}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def remaining(self):
        return len(self.buf) - self.pos

    def count(self, fmt, min_item):
        (n,) = self.unpack(fmt)
        if n * min_item > self.remaining():
            raise Refused("damaged", "count exceeds the input")
        return n

    def name(self):
        (n,) = self.unpack("H")
        if n > MAX_NAME:
            raise Refused("damaged", "name too long")
        return self.take(n)


def decode_tree(buf):
    r = Reader(buf)
    (version,) = r.unpack("B")
    if version != 1:
        raise Refused("newer-format", f"tree version {version}")
    entries = []
    for _ in range(r.count("I", 49)):
        e = {"name": r.name()}
        kind, *meta = r.unpack("BIIIqqQQ")
        e.update(kind=kind, **dict(zip(["mode", "uid", "gid", "mtime_ns", "ctime_ns", "ino", "size"], meta)))
        if kind == 1:
            parts = []
            for _ in range(r.count("I", 37)):
                (pk,) = r.unpack("B")
                if pk > 1:
                    raise Refused("newer-format", f"part kind {pk}")
                parts.append((pk, r.take(32), r.unpack("I")[0]))
            e["parts"] = parts
        elif kind == 2:
            e["tree"] = r.take(32)
        elif kind == 3:
            e["target"] = r.name()
        elif kind == 4:
            e["path"] = [r.name() for _ in range(r.count("H", 2))]
        elif kind in (5, 6):
            (e["rdev"],) = r.unpack("Q")
        elif kind == 7:
            pass
        else:
            raise Refused("damaged", f"node kind {kind}")
        e["xattrs"] = [(r.name(), r.take(r.unpack("I")[0])) for _ in range(r.count("H", 6))]
        entries.append(e)
    if r.remaining():
        raise Refused("damaged", "trailing bytes")
    return entries


def encode_tree(entries):
    def b16(b):
        return struct.pack("<H", len(b)) + b

    out = bytearray(struct.pack("<BI", 1, len(entries)))
    for e in entries:
        out += b16(e["name"])
        out += struct.pack("<BIIIqqQQ", e["kind"], e["mode"], e["uid"], e["gid"], e["mtime_ns"],
                           e["ctime_ns"], e["ino"], e["size"])
        k = e["kind"]
        if k == 1:
            out += struct.pack("<I", len(e["parts"]))
            for pk, pid, ln in e["parts"]:
                out += bytes([pk]) + pid + struct.pack("<I", ln)
        elif k == 2:
            out += e["tree"]
        elif k == 3:
            out += b16(e["target"])
        elif k == 4:
            out += struct.pack("<H", len(e["path"])) + b"".join(b16(c) for c in e["path"])
        elif k in (5, 6):
            out += struct.pack("<Q", e["rdev"])
        out += struct.pack("<H", len(e["xattrs"]))
        for name, value in e["xattrs"]:
            out += b16(name) + struct.pack("<I", len(value)) + value
    return bytes(out)


# --- key files (02-crypto.md) ------------------------------------------------------------------


def wrapping_key(password, salt, m, t, p):
    return hash_secret_raw(password, salt, time_cost=t, memory_cost=m, parallelism=p,
                           hash_len=32, type=Type.ID, version=19)


def key_header(m, t, p, salt, version=1):
    return b"CAIRNKEY" + struct.pack("<HHIII", version, 1, m, t, p) + salt


def open_keyfile(file, password):
    if len(file) < 56:
        raise Refused("damaged", "truncated")
    if file[:8] != b"CAIRNKEY":
        raise Refused("damaged", "bad magic")
    version, kdf, m, t, p = struct.unpack("<HHIII", file[8:24])
    if version > 2:
        raise Refused("newer-format", f"version {version}")
    if kdf != 1:
        raise Refused("newer-format", f"kdf {kdf}")
    if not (1 <= t <= 64 and 1 <= p <= 64 and 8 * p <= m <= 4 * 1024 * 1024):
        raise Refused("damaged", "KDF parameters out of bounds")
    if len(file) < 72:
        raise Refused("damaged", "truncated")
    key = wrapping_key(password, file[24:56], m, t, p)
    try:
        payload = AESGCM(key).decrypt(nonce(0), file[56:], file[:56])
    except InvalidTag:
        raise Refused("wrong-password", "does not open")
    r = Reader(payload)
    master = r.take(32)
    (created,) = r.unpack("q")
    host = r.take(r.unpack("H")[0])
    user = r.take(r.unpack("H")[0])
    generations = []
    if version == 2:
        (n,) = r.unpack("H")
        if not 1 <= n <= 96:
            raise Refused("damaged", f"{n} key generations")
        generations = [r.take(32) for _ in range(n)]
    if r.remaining():
        raise Refused("damaged", "trailing bytes")
    return master, created, host, user, payload, generations


# --- the checks --------------------------------------------------------------------------------


def parse(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines[0].startswith("expect: ") and lines[1].startswith("type: "), path
    fields = {}
    for line in lines[2:]:
        k, _, v = line.partition(": ")
        if k != "comment":
            assert k not in fields, f"{path}: {k} twice"
            fields[k] = v
    return lines[0][8:], lines[1][6:], fields


def eq(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got.hex() if isinstance(got, bytes) else got}, "
                             f"want {want.hex() if isinstance(want, bytes) else want}")


def generations(f):
    """The vector's generation keys (generation 1 first), if it has any."""
    g = bytes.fromhex(f.get("generation-keys", ""))
    assert len(g) % 32 == 0
    return [g[i:i + 32] for i in range(0, len(g), 32)]


def success(kind, f):
    x = lambda k: bytes.fromhex(f[k])  # noqa: E731
    master = x("master")
    if kind == "derive-keys":
        for field in CONTEXTS:
            eq(field, derive(master, field), x(field))
    elif kind == "chunk-id":
        eq("chunk id", chunk_id(master, x("data")), x("id"))
    elif kind == "tree-id":
        eq("tree id", tree_id(master, x("data")), x("id"))
    elif kind == "label-hash":
        h, msg = label_hash(master, [x("service"), x("revision")])
        eq("message", msg, x("message"))
        eq("hash", h, x("hash"))
    elif kind == "gear-table":
        G, raw = gear_table(master)
        for i in range(4):
            eq(f"word {i}", G[i], int(f[f"word-{i}"], 16))
        eq("prefix", raw[:32], x("table-prefix"))
        eq("table hash", blake3.blake3(raw).digest(), x("table-blake3"))
    elif kind == "chunk-cuts":
        data = blake3.blake3(x("seed")).digest(length=int(f["input-len"]))
        eq("input hash", blake3.blake3(data).digest(), x("input-blake3"))
        mn, avg, mx = int(f["min"]), int(f["avg"]), int(f["max"])
        s, l = masks(avg)
        eq("masks", (s, l), (int(f["mask-s"], 16), int(f["mask-l"], 16)))
        G, _ = gear_table(master)
        eq("lengths", chunk_lengths(data, G, mn, avg, mx), [int(n) for n in f["lengths"].split(",")])
    elif kind == "sealed-file":
        magic, salt, plaintext, file = x("magic"), x("salt"), x("plaintext"), x("file")
        assert magic in MAGICS
        key_gen, gens = int(f["key-gen"]), generations(f)
        h = header(magic, int(f["version"]), key_gen, salt)
        eq("header", h, x("header"))
        ok = object_key(master, salt, key_gen, gens)
        eq("object key", ok, x("object-key"))
        eq("file", h + seal(ok, 0, h, plaintext), file)
        eq("opened", open_sealed_file(master, magic, file, gens), plaintext)
        if key_gen:
            try:
                open_sealed_file(master, magic, file)
                raise AssertionError("opened without its generation key")
            except Refused as r:
                assert r.kind == "unknown-generation", r
        doc = json.loads(plaintext)
        assert doc.get("version", 1) == 1 or magic == b"CAIRNLCK"
        if magic == b"CAIRNSNP":
            eq("snapshot id", blake3.blake3(file).digest(), x("snapshot-id"))
            assert len(file) <= 16 << 20
        if magic == b"CAIRNEVT":
            ev = open_event(master, file)
            eq("event", (ev["service"], ev["kind"], ev.get("from"), ev.get("to"), ev["outcome"]),
               ("www", "transition", "v1.2.2", "v1.2.3", "ok"))
            _, _, snap = parse(os.path.join(VECTORS, "sealed-snapshot.txt"))
            eq("loaded snapshot", ev["snapshot"], snap["snapshot-id"])
            want = x("active-revision").decode()
            eq("active revision", active_revision([("events/" + "0" * 32, ev)]), want)
            # What 09-events.md says about newer events: a failed one or a dump changes nothing,
            # a later successful load does, and ties go to the greater file name.
            later = lambda **kw: ("events/" + "f" * 32, dict(ev, time_ns=ev["time_ns"] + 1, **kw))  # noqa: E731
            eq("after a failed load", active_revision([("events/" + "0" * 32, ev),
               later(kind="load", to="x", outcome="failed: no")]), want)
            eq("after a dump", active_revision([("events/" + "0" * 32, ev), later(kind="dump", to="x")]), want)
            eq("after a load", active_revision([("events/" + "0" * 32, ev), later(kind="load", to="x")]), "x")
            tie = ("events/" + "1" * 32, dict(ev, to="y"))
            eq("tie", active_revision([("events/" + "0" * 32, ev), tie]), "y")
        if magic == b"CAIRNPRN":
            doc = open_prune(master, file)
            eq("prune record", (doc["version"], doc["hidden_ns"], doc["packs"]),
               (1, 1_700_000_200_000_000_000, ["3c" * 32, "d7" * 32]))
            eq("field order", list(doc), ["version", "hidden_ns", "packs"])
            eq("pending", pending([doc]), {b"\x3c" * 32, b"\xd7" * 32})
    elif kind == "pack":
        salt = x("salt")
        eq("pack key", object_key(master, salt), x("pack-key"))
        blobs = []
        for i in range(int(f["blobs"])):
            k, data, bid, enc = int(f[f"blob-{i}-kind"]), x(f"blob-{i}-data"), x(f"blob-{i}-id"), x(f"blob-{i}-encoded")
            eq(f"blob {i} id", tree_id(master, data) if k == 1 else chunk_id(master, data), bid)
            blobs.append((k, bid, len(data), enc))
        pack, table = build_pack(master, salt, blobs)
        eq("table", table, x("table"))
        eq("pack", pack, x("pack"))
        eq("pack id", blake3.blake3(pack).digest(), x("pack-id"))
        key, entries, _, T = open_pack(master, pack)
        eq("table offset", T, int(f["table-offset"]))
        for slot, e in enumerate(entries):
            eq(f"blob {slot} data", read_blob(master, key, slot, e, pack), x(f"blob-{slot}-data"))
    elif kind == "tree":
        sub, enc = x("subtree-encoding"), x("encoding")
        eq("subtree id", tree_id(master, sub), x("subtree-id"))
        eq("tree id", tree_id(master, enc), x("tree-id"))
        entries = decode_tree(enc)
        eq("re-encoding", encode_tree(entries), enc)
        eq("subtree re-encoding", encode_tree(decode_tree(sub)), sub)
        names = [e["name"] for e in entries]
        eq("names", names, [b"a.txt", b"b", b"c-\xff", b"d", b"e", b"f", b"g"])
        eq("kinds", [e["kind"] for e in entries], [1, 2, 3, 4, 5, 6, 7])
        a = entries[0]
        eq("parts", [(p[1], p[2]) for p in a["parts"]],
           [(chunk_id(master, b"hello "), 6), (chunk_id(master, b"world\n"), 6)])
        eq("size", a["size"], 12)
        eq("xattrs", a["xattrs"], [(b"user.comment", b"hi"), (b"user.empty", b"")])
        eq("dir", entries[1]["tree"], x("subtree-id"))
        eq("symlink", entries[2]["target"], b"a.txt")
        eq("hard link", entries[3]["path"], [b"b", b"x"])
        eq("devices", (entries[4]["rdev"], entries[5]["rdev"]), (0x0501, 0x0800))
        eq("fifo times", (entries[6]["mtime_ns"], entries[6]["ctime_ns"]), (-1_500_000_000, -1))
        eq("modes", [e["mode"] for e in entries],
           [0o100644, 0o040755, 0o120777, 0o100600, 0o020620, 0o060660, 0o010644])
    elif kind == "delta-run":
        plain, bases, run = x("plaintext"), x("bases-data"), x("run")
        r = Reader(plain)
        eq("compression byte", r.unpack("B")[0], 2)
        version, depth = r.unpack("BB")
        if version not in (1, 2):
            raise Refused("newer-format", f"run version {version}")
        lists = []
        for _ in range(2):
            (n,) = r.unpack("I")
            lists.append([(r.take(32), r.unpack("I")[0]) for _ in range(n)])
        members, base_list = lists
        skip, plen = r.unpack("II")
        frame = plain[len(plain) - r.remaining():]
        eq("header", plain[:len(plain) - len(frame)], x("header"))
        prefix = bases[skip:skip + plen]
        run_len = sum(n for _, n in members)
        if version == 1:
            d = zstandard.ZstdDecompressor(
                dict_data=zstandard.ZstdCompressionDict(prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT),
                max_window_size=1 << 26)
            eq("run", d.decompress(frame, max_output_size=run_len + 1), run)
        else:
            edits = zstandard.ZstdDecompressor().decompress(frame, max_output_size=2 * run_len + 64)
            if "edits" in f:
                eq("edits", edits, x("edits"))
            eq("run", apply_edits(edits, prefix, run_len), run)
        eq("run id", keyed(derive(master, "run-id-key"), run), x("run-id"))
        at = 0
        for mid, n in members:
            eq("member id", chunk_id(master, run[at:at + n]), mid)
            at += n
        at = 0
        for bid, n in base_list:
            eq("base id", chunk_id(master, bases[at:at + n]), bid)
            at += n
        eq("depth", depth, 1)
    elif kind == "keyfile":
        password, salt = x("password"), x("salt")
        m, t, p = int(f["m-kib"]), int(f["t"]), int(f["p"])
        wk = wrapping_key(password, salt, m, t, p)
        eq("wrapping key", wk, x("wrapping-key"))
        host, user = x("host"), x("user")
        gens = generations(f)
        payload = master + struct.pack("<q", int(f["created-ns"])) + struct.pack("<H", len(host)) + host \
            + struct.pack("<H", len(user)) + user
        if gens:
            payload += struct.pack("<H", len(gens)) + b"".join(gens)
        eq("payload", payload, x("payload"))
        h = key_header(m, t, p, salt, 2 if gens else 1)
        eq("key file", h + seal(wk, 0, h, payload), x("keyfile"))
        got = open_keyfile(x("keyfile"), password)
        eq("opened", got[:4], (master, int(f["created-ns"]), host, user))
        eq("generation keys", got[5], gens)
    else:
        raise AssertionError(f"unknown type {kind}")


def failure(kind, f, reason):
    x = lambda k: bytes.fromhex(f[k])  # noqa: E731
    try:
        if kind == "sealed-file":
            open_sealed_file(x("master"), x("magic"), x("file"))
        elif kind == "pack":
            master, pack = x("master"), x("pack")
            key, entries, _, _ = open_pack(master, pack)
            for slot, e in enumerate(entries):
                read_blob(master, key, slot, e, pack)
        elif kind == "pack-table":
            decode_table(x("table"), int(f["table-offset"]))
        elif kind == "tree":
            decode_tree(x("encoding"))
        elif kind == "keyfile":
            open_keyfile(x("keyfile"), x("password"))
        else:
            raise AssertionError(f"unknown type {kind}")
    except Refused as r:
        ok = {
            "authentication": r.kind == "damaged" and "authentication" in r.why,
            "truncated": r.kind == "damaged" and "truncated" in r.why,
            "newer-format": r.kind == "newer-format",
            "wrong-password": r.kind == "wrong-password",
            "kdf-bounds": r.kind == "damaged" and "out of bounds" in r.why,
        }.get(reason, False)
        if not ok:
            raise AssertionError(f"expected {reason}, got {r}")
        return
    raise AssertionError(f"expected {reason}, but it was accepted")


def main():
    passed, failed = 0, 0
    for name in sorted(os.listdir(VECTORS)):
        if not name.endswith(".txt"):
            continue
        expect, kind, fields = parse(os.path.join(VECTORS, name))
        try:
            if expect == "success":
                success(kind, fields)
            else:
                failure(kind, fields, expect.removeprefix("failure "))
            print(f"ok    {name}")
            passed += 1
        except Exception as e:  # report every vector, then fail
            print(f"FAIL  {name}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
