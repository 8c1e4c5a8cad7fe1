#!/usr/bin/env python3
"""Known-answer vectors for docs/FORMAT.md, computed from that page alone.

This is an independent implementation of the canonical encoding, the replay
and the tree digest in Python's standard library. Run it from this directory;
it rewrites events.json, replay.log, replay.json and tree.json.
"""
import hashlib
import json
import struct

BANKS = ["sha1", "sha256", "sha384", "sha512"]


UNBOUND = {"time", "boot_id"}


def canonical(content):
    out = b"rimon-event-v1\n"
    for key in sorted(content, key=lambda k: k.encode()):
        if key in UNBOUND:
            continue
        v = content[key]
        k = key.encode()
        out += struct.pack(">I", len(k)) + k
        if isinstance(v, int):
            b = str(v).encode()
            out += b"n" + struct.pack(">I", len(b)) + b
        else:
            b = v.encode("utf-8")
            out += b"s" + struct.pack(">I", len(b)) + b
    return out


def digests(content):
    c = canonical(content)
    return {b: hashlib.new(b, c).hexdigest() for b in BANKS}


BOOT = "6f1c3e2a-8d4b-4c5e-9f10-2b3c4d5e6f70"
EVENTS = [
    {"kind": "file", "path": "/usr/bin/myapp", "sha256": hashlib.sha256(b"hello\n").hexdigest(),
     "size": 6, "reason": "initial", "time": "2026-11-26T17:50:43.836525411Z", "boot_id": BOOT},
    {"kind": "file", "path": "/etc/myapp/config.yaml", "sha256": "", "size": 0,
     "reason": "deleted", "time": "2026-11-26T17:51:00Z", "boot_id": BOOT},
    {"kind": "tree", "path": "/opt/caf\u00e9 app/\u65e5\u672c", "sha256": "00" * 32, "size": 18446744073709551615,
     "reason": "launch:myapp.service", "time": "2026-11-26T17:52:00.5Z", "boot_id": BOOT},
    {"kind": "file", "path": "/tmp/odd name\nwith newline", "sha256": "ab" * 32, "size": 1,
     "reason": "changed", "time": "2026-11-26T17:53:00Z", "boot_id": BOOT, "zz_extra": "future field", "a_num": 7},
]


def events():
    return [{"content": e, "canonical_hex": canonical(e).hex(), "digests": digests(e)} for e in EVENTS]


def replay_log():
    pcr = {b: bytes(hashlib.new(b).digest_size) for b in BANKS}
    lines = []
    for i, e in enumerate(EVENTS):
        ds = digests(e)
        for b in BANKS:
            pcr[b] = hashlib.new(b, pcr[b] + bytes.fromhex(ds[b])).digest()
        rec = {"recnum": i, "pcr": 23,
               "digests": [{"hashAlg": b, "digest": ds[b]} for b in BANKS],
               "content_type": "rimon", "content": e}
        lines.append(b"\x1e" + json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    return b"".join(lines), {"pcr": 23, "values": {b: v.hex() for b, v in pcr.items()}}


# A tree, as the Go test builds it on disk: (rel, type, perm, value-or-content)
TREE = [
    (".", "d", 0o755, None),
    ("bin", "d", 0o755, None),
    ("bin/app", "f", 0o4755, b"\x7fELF fake binary\n"),
    ("bin/app-helper", "f", 0o755, b""),
    ("conf", "d", 0o750, None),
    ("conf/a b.conf", "f", 0o640, b"key = value\n"),
    ("conf/current", "l", 0o777, "a b.conf"),
    ("conf/dangling", "l", 0o777, "../nowhere"),
    ("run", "d", 0o1777, None),
    ("run/fifo", "p", 0o600, None),
]


def tree():
    entries = []
    for rel, typ, perm, val in TREE:
        if typ == "f":
            value = hashlib.sha256(val).hexdigest()
        elif typ == "l":
            value = val
        else:
            value = ""
        entries.append((rel.encode(), typ, perm, value.encode()))
    entries.sort(key=lambda e: e[0])
    enc = b"rimon-tree-v1\n"
    for rel, typ, perm, value in entries:
        enc += typ.encode() + b" " + ("%04o" % perm).encode() + b" " + str(len(rel)).encode() + b":" + rel
        enc += b" " + str(len(value)).encode() + b":" + value + b"\n"
    spec = [{"rel": r, "type": t, "perm": p,
             "content_hex": v.hex() if t == "f" else None,
             "target": v if t == "l" else None} for r, t, p, v in TREE]
    return {"entries": spec, "encoding_hex": enc.hex(), "digest": hashlib.sha256(enc).hexdigest()}


if __name__ == "__main__":
    with open("events.json", "w") as f:
        json.dump(events(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    log, expected = replay_log()
    with open("replay.log", "wb") as f:
        f.write(log)
    with open("replay.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    with open("tree.json", "w") as f:
        json.dump(tree(), f, indent=1)
        f.write("\n")
