#!/usr/bin/env python3
"""Known-answer vectors for docs/FORMAT.md, computed from that page alone.

This is an independent implementation of the canonical encoding, the replay,
the reading rules of the log, the tree digest and the launch description of
a container (its normal form and launch digest) in Python's standard
library. Run it from this directory; it rewrites events.json, replay.log,
replay.json, tree.json, mixed.log, mixed.json, cases.json and launch.json.
"""
import hashlib
import hmac
import json
import re
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
    {"kind": "file", "path": "/etc/myapp/new.d/extra.conf", "sha256": hashlib.sha256(b"x=1\n").hexdigest(), "size": 4,
     "reason": "created", "time": "2026-11-26T17:54:00Z", "boot_id": BOOT},
    {"kind": "unmeasured", "path": "/var/lib/myapp/state.db", "reason": "changed", "cause": "unstable",
     "error": "changed during each of 3 reads", "time": "2026-11-26T17:55:00Z", "boot_id": BOOT},
    {"kind": "unmeasured", "path_escaped": None, "reason": "initial", "cause": "name_not_utf8",
     "error": "file name is not valid UTF-8", "time": "2026-11-26T17:56:00Z", "boot_id": BOOT},
]


def escape_path(b):
    """path_escaped: % and every byte not part of valid UTF-8 as %XX, the rest as is."""
    out, i = [], 0
    while i < len(b):
        for n in (4, 3, 2, 1):
            try:
                ch = b[i:i + n].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(ch) == 1 and ch != "%":
                out.append(ch)
                i += n
                break
        else:
            out.append("%%%02X" % b[i])
            i += 1
    return "".join(out)


EVENTS[-1]["path_escaped"] = escape_path(b"/srv/data/caf\xe9% \xc3\xa9.txt")
assert EVENTS[-1]["path_escaped"] == "/srv/data/caf%E9%25 \u00e9.txt"


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


# A reader of the log written from docs/FORMAT.md, sections 1, 2 and 4.

class Refused(Exception):
    pass


MAX_RECORD = 1 << 20
TOP = {"recnum", "pcr", "digests", "content_type", "content"}
SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
SYSTEMD_HASHED = {None, "phase", "filesystem", "machine-id", "product-id", "keyslot",
                  "nvpcr-init", "nvpcr-separator", "dm-verity"}
PLAIN_INT = re.compile(r"0|[1-9][0-9]*\Z")
KEY = re.compile(r"[a-z0-9_]{1,64}\Z")


def plain_int(s):
    if not PLAIN_INT.match(s) or int(s) > 2**64 - 1:
        raise Refused("integer not in plain decimal up to 2^64-1: " + s)
    return int(s)


def no_float(s):
    raise Refused("not an integer: " + s)


def no_constant(s):
    raise Refused("not JSON: " + s)


def unique(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("a field name appears twice")
    return dict(pairs)


def check_text(v):
    """Python's json reads an unpaired surrogate escape as a lone surrogate."""
    if isinstance(v, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise Refused("unpaired surrogate")
    elif isinstance(v, dict):
        for k, x in v.items():
            check_text(k)
            check_text(x)
    elif isinstance(v, list):
        for x in v:
            check_text(x)


def parse_record(body):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("invalid UTF-8")
    try:
        rec = json.loads(text, object_pairs_hook=unique, parse_int=plain_int,
                         parse_float=no_float, parse_constant=no_constant)
    except ValueError as e:  # json.JSONDecodeError
        raise Refused("invalid JSON: %s" % e)
    check_text(rec)
    if not isinstance(rec, dict) or set(rec) - TOP:
        raise Refused("not an object of the known fields")
    if "recnum" in rec and not isinstance(rec["recnum"], int):
        raise Refused("recnum")
    if not isinstance(rec.get("pcr"), int) or rec["pcr"] > 31:
        raise Refused("pcr")
    ds = rec.get("digests")
    if not isinstance(ds, list) or not ds:
        raise Refused("digests missing or empty")
    seen = {}
    for d in ds:
        if not isinstance(d, dict) or set(d) != {"hashAlg", "digest"}:
            raise Refused("digest entry")
        alg, dig = d["hashAlg"], d["digest"]
        if alg not in SIZES or alg in seen:
            raise Refused("bank")
        if not isinstance(dig, str) or not re.fullmatch("[0-9a-f]{%d}" % (2 * SIZES[alg]), dig):
            raise Refused("digest not lowercase hex of its size")
        seen[alg] = bytes.fromhex(dig)
    ct = rec.get("content_type")
    if not isinstance(ct, str) or not ct or "content" not in rec:
        raise Refused("content_type or content")
    if ct == "rimon":
        c = rec["content"]
        if not isinstance(c, dict) or len(c) > 64:
            raise Refused("content")
        for k, v in c.items():
            if not KEY.match(k) or not isinstance(v, (str, int)) or isinstance(v, bool):
                raise Refused("content field " + k)
    return rec, seen


def measured_data(rec):
    """The bytes the digests hash, or None when they cannot be recomputed."""
    ct, c = rec["content_type"], rec["content"]
    if ct == "rimon":
        return canonical(c)
    if ct == "systemd" and isinstance(c, dict):
        if c.get("eventType") in SYSTEMD_HASHED and isinstance(c.get("string"), str):
            return c["string"].encode("utf-8")
    return None


def read_log(data):
    """Replays a whole log; returns {(pcr, bank): value} or raises Refused."""
    pcrs = {}
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last line feed
    if tail and tail[:1] != b"\x1e":
        raise Refused("trailing bytes that are not a record")
    for i, line in enumerate(lines):
        if len(line) + 1 > MAX_RECORD:
            raise Refused("record over 1 MiB")
        if line[:1] != b"\x1e":
            raise Refused("no record separator")
        rec, ds = parse_record(line[1:])
        if "recnum" in rec and rec["recnum"] != i or "recnum" not in rec and rec["content_type"] == "rimon":
            raise Refused("record %d: recnum" % i)
        m = measured_data(rec)
        if m is not None:
            for alg, dig in ds.items():
                if hashlib.new(alg, m).digest() != dig:
                    raise Refused("record %d: %s digest does not match" % (i, alg))
        for alg, dig in ds.items():
            k = (rec["pcr"], alg)
            cur = pcrs.get(k, bytes([0xFF if 17 <= rec["pcr"] <= 22 else 0] * SIZES[alg]))
            pcrs[k] = hashlib.new(alg, cur + dig).digest()
    return pcrs


def record(recnum, pcr, content_type, content, digests):
    rec = {}
    if recnum is not None:
        rec["recnum"] = recnum
    rec.update({"pcr": pcr, "digests": [{"hashAlg": b, "digest": d.hex()} for b, d in digests.items()],
                "content_type": content_type, "content": content})
    return b"\x1e" + json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def rimon_record(recnum, content, banks=BANKS):
    c = canonical(content)
    return record(recnum, 23, "rimon", content, {b: hashlib.new(b, c).digest() for b in banks})


def systemd_record(pcr, string, event_type, key=None):
    content = {"string": string, "bootId": "7a1c2e9b0d4f4e6a8b3c5d7e9f0a1b2c", "timestamp": 5284713, "eventType": event_type}
    if key is None:
        ds = {b: hashlib.new(b, string.encode()).digest() for b in BANKS}
    else:  # systemd-cryptsetup: HMAC(volume key, string)
        ds = {b: hmac.new(key, string.encode(), b).digest() for b in BANKS}
    return record(None, pcr, "systemd", content, ds)


def mixed_log():
    """systemd's records and rimon's in one file, numbered by position."""
    log = b"".join([
        systemd_record(11, "enter-initrd", "phase"),
        systemd_record(15, "machine-id:6c7b4a3f2e1d4c0b9a8f7e6d5c4b3a21", "machine-id"),
        systemd_record(15, "cryptsetup:root:1e023a55-60f9-4b6b-9b80-67438dc5f065", "volume-key", key=b"volume key"),
        rimon_record(3, EVENTS[0]),
        systemd_record(11, "leave-initrd", "phase"),
        rimon_record(5, EVENTS[5]),
        rimon_record(6, EVENTS[6]),
        rimon_record(7, EVENTS[4]),
        record(None, 16, "ima-ng", {"path": "/bin/sh"}, {"sha256": bytes(range(32))}),
    ])
    values = read_log(log)
    return log, {"values": {"%d/%s" % k: v.hex() for k, v in sorted(values.items())}}


def cases():
    """Logs the reader above accepts (with their PCR values) or refuses."""
    ok = rimon_record(0, EVENTS[0])
    e = dict(EVENTS[0])
    out = []

    def add(name, log, pad=0):
        # A run of pad bytes "p" is stored as "@PAD@" and the count, to keep the file small.
        stored = log.replace(b"p" * pad, b"@PAD@") if pad else log
        c = {"name": name, "log_hex": stored.hex()}
        if pad:
            c["pad"] = pad
        try:
            vals = read_log(log)
            c.update(ok=True, values={"%d/%s" % k: v.hex() for k, v in sorted(vals.items())})
        except Refused as why:
            c.update(ok=False, why=str(why))
        out.append(c)

    def with_path(p, raw=None):
        d = dict(e, path=p)
        rec = rimon_record(0, d)
        return rec if raw is None else rec.replace(json.dumps(p, ensure_ascii=False).encode(), raw)

    add("plain", ok)
    add("escaped_letter", with_path("/usr/bin/myapp", b'"/usr/bin/my\\u0061pp"'))
    add("escaped_solidus", with_path("/usr/bin/myapp", b'"\\/usr\\/bin\\/myapp"'))
    add("surrogate_pair", with_path("/tmp/\U0001F600", b'"/tmp/\\ud83d\\ude00"'))
    add("lone_low_surrogate", with_path("/tmp/\ufffd", b'"/tmp/\\udc80"'))
    add("lone_high_surrogate", with_path("/tmp/\ufffdx", b'"/tmp/\\ud83dx"'))
    add("two_high_surrogates", with_path("/tmp/\ufffd\ufffd", b'"/tmp/\\ud83d\\ud83d"'))
    add("invalid_utf8", with_path("/tmp/\ufffd", b'"/tmp/\xff"'))
    add("surrogate_as_utf8_bytes", with_path("/tmp/\ufffd", b'"/tmp/\xed\xb2\x80"'))
    add("u_plus_fffd", with_path("/tmp/\ufffd"))
    add("uppercase_digest", re.sub(rb'"digest":"([0-9a-f]+)"', lambda m: b'"digest":"' + m.group(1).upper() + b'"', ok, count=1))
    add("empty_digests", record(0, 23, "rimon", e, {}))
    add("unknown_top_level_field", ok.replace(b'"pcr":23,', b'"pcr":23,"event":1,'))
    add("negative_zero_pcr", ok.replace(b'"pcr":23', b'"pcr":-0'))
    add("pcr_with_exponent", ok.replace(b'"pcr":23', b'"pcr":2.3e1'))
    add("largest_integer", rimon_record(0, dict(e, size=2**64 - 1)))
    add("integer_too_large", rimon_record(0, dict(e, size=2**64 - 1)).replace(b"18446744073709551615", b"18446744073709551616"))
    add("rimon_without_recnum", rimon_record(None, e))
    add("first_rimon_record_is_1", rimon_record(1, e))
    add("rimon_1_after_systemd", systemd_record(11, "enter-initrd", "phase") + rimon_record(1, e))
    add("rimon_0_after_systemd", systemd_record(11, "enter-initrd", "phase") + rimon_record(0, e))
    add("systemd_edited", systemd_record(11, "enter-initrd", "phase").replace(b"enter", b"leave"))
    add("volume_key", systemd_record(15, "cryptsetup:root:uuid", "volume-key", key=b"k"))
    add("torn_tail", ok + ok[:40].replace(b'"recnum":0', b'"recnum":1'))
    add("trailing_bytes_without_separator", ok + b'{"pcr":23}')
    add("empty_line", ok + b"\n")
    add("non_json_space", ok.replace(b"}\n", "}\u00a0".encode() + b"\n"))
    pad = MAX_RECORD - len(rimon_record(0, dict(e, zz="")))
    add("exactly_1_mib", rimon_record(0, dict(e, zz="p" * pad)), pad)
    add("over_1_mib", rimon_record(0, dict(e, zz="p" * (pad + 1))), pad + 1)
    for c in out:
        if c["name"] == "torn_tail":  # a torn tail is left out, not refused
            assert c["ok"]
    return out


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


# The launch description of a container (docs/FORMAT.md, "The launch
# description"): config.json read strictly, normalized, written as canonical
# JSON; the launch digest is SHA-256("rimon-launch-v1\n" || that JSON).

LAUNCH_HEADER = b"rimon-launch-v1\n"
MIN_ID = 32
SHORT_ID = 12
MAX_DEPTH = 64


def launch_int(s):
    v = int(s)
    if not -2**63 <= v <= 2**64 - 1:
        raise Refused("integer out of range: " + s)
    return v


def depth(v, d=0):
    if isinstance(v, (dict, list)):
        if d >= MAX_DEPTH:
            raise Refused("nested too deep")
        for x in (v.values() if isinstance(v, dict) else v):
            depth(x, d + 1)


def parse_config(text):
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("not UTF-8")
    cfg = json.loads(raw.decode("utf-8"), object_pairs_hook=unique, parse_int=launch_int,
                     parse_float=no_float, parse_constant=no_constant)
    check_text(cfg)
    depth(cfg)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("root"), dict) or not isinstance(cfg["root"].get("path"), str) or not cfg["root"]["path"]:
        raise Refused("root.path missing")
    return cfg


def replace_id(v, cid):
    if isinstance(v, dict):
        return {k: replace_id(x, cid) for k, x in v.items()}
    if isinstance(v, list):
        return [replace_id(x, cid) for x in v]
    if isinstance(v, str):
        return v.replace(cid, "{id}").replace(cid[:SHORT_ID], "{id}")
    return v


def clean_dest(d):
    if d == "/":
        return True
    return d.startswith("/") and all(seg not in ("", ".", "..") for seg in d[1:].split("/"))


def related(a, b):
    if not isinstance(a, str) or not isinstance(b, str) or not clean_dest(a) or not clean_dest(b) or a == b or a == "/" or b == "/":
        return True
    return b.startswith(a + "/") or a.startswith(b + "/")


def order_mounts(ms):
    dest = [m.get("destination") if isinstance(m, dict) else None for m in ms]
    rest = list(range(len(ms)))
    out = []
    while rest:
        ready = [i for i in rest if not any(j < i and related(dest[j], dest[i]) for j in rest)]
        best = min(ready, key=lambda i: ((dest[i] if isinstance(dest[i], str) else "").encode(), i))
        out.append(ms[best])
        rest.remove(best)
    return out


def normalize(cfg, cid):
    t = json.loads(json.dumps(cfg))
    t.pop("hooks", None)
    if isinstance(t.get("root"), dict):
        t["root"].pop("path", None)
    if isinstance(t.get("linux"), dict):
        t["linux"].pop("cgroupsPath", None)
    if isinstance(t.get("annotations"), dict):
        t["annotations"] = {k: v for k, v in t["annotations"].items() if k.startswith("run.oci.")}
        if not t["annotations"]:
            del t["annotations"]
    if isinstance(t.get("process"), dict):
        t["process"].pop("consoleSize", None)
    if len(cid) >= MIN_ID:
        t = replace_id(t, cid)
    ns = t.get("linux", {}).get("namespaces") if isinstance(t.get("linux"), dict) else None
    if isinstance(ns, list):
        for n in ns:
            if isinstance(n, dict) and isinstance(n.get("path"), str):
                m = re.match(r"/proc/([0-9]+)/", n["path"])
                if m and m.group(1) != "1" and not m.group(1).startswith("0"):
                    n["path"] = "/proc/{pid}/" + n["path"][m.end():]
    if isinstance(t.get("mounts"), list):
        t["mounts"] = order_mounts(t["mounts"])
    p = t.get("process")
    if isinstance(p, dict):
        if isinstance(p.get("env"), list):
            p["env"] = sorted(p["env"], key=lambda e: (e.split("=", 1)[0] if isinstance(e, str) else "").encode())
        if isinstance(p.get("capabilities"), dict):
            for k, v in p["capabilities"].items():
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    p["capabilities"][k] = sorted(v, key=lambda x: x.encode())
    return t


def canon_str(s):
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canon_json(v):
    if isinstance(v, dict):
        return "{" + ",".join(canon_str(k) + ":" + canon_json(v[k]) for k in sorted(v, key=lambda k: k.encode())) + "}"
    if isinstance(v, list):
        return "[" + ",".join(canon_json(x) for x in v) + "]"
    if isinstance(v, str):
        return canon_str(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    return str(v)


PODMAN_ID = "cc2a8dd0f4b588b802011040cfbccdf795bf95db49868fd2314b11e096b447db"
LAUNCH_CASES = [
    ("runc_spec", "web-1", {
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "consoleSize": {"height": 40, "width": 120}, "user": {"uid": 0, "gid": 0},
                    "args": ["/hello", "started"], "env": ["PATH=/usr/bin:/bin", "TERM=xterm", "A=2", "A=1"],
                    "cwd": "/", "capabilities": {"bounding": ["CAP_KILL", "CAP_AUDIT_WRITE"], "effective": ["CAP_KILL", "CAP_AUDIT_WRITE"]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                   {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec"]}],
        "hooks": {"createRuntime": [{"path": "/usr/bin/rimon", "args": ["rimon", "oci-hook"]}]},
        "annotations": {"io.kubernetes.cri-o.Created": "2026-11-28T15:42:05Z", "run.oci.keep_original_groups": "1"},
        "linux": {"cgroupsPath": "/machine/web-1", "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/4242/ns/net"}, {"type": "uts", "path": "/proc/1/ns/uts"}, {"type": "ipc", "path": "/proc/10/ns/ipc"}],
                  "maskedPaths": ["/proc/kcore"], "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 18446744073709551615, "op": "SCMP_CMP_EQ"}]}]},
                  "resources": {"memory": {"limit": -1}, "cpu": {"shares": 0}}},
    }),
    ("podman_ids", PODMAN_ID, {
        "process": {"args": ["/hello"], "env": ["HOSTNAME=" + PODMAN_ID[:12], "container=podman"]},
        "root": {"path": "/var/lib/containers/storage/vfs/dir/61a50047084be87394707c1e6d7a2f2ae8b28b3f159b93f79cfe2d26624846d2"},
        "hostname": PODMAN_ID[:12],
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/run/.containerenv", "type": "bind", "source": "/run/containers/storage/vfs-containers/" + PODMAN_ID + "/userdata/.containerenv"},
                   {"destination": "/etc/hostname", "type": "bind", "source": "/run/containers/storage/vfs-containers/" + PODMAN_ID + "/userdata/hostname"},
                   {"destination": "/etc/hosts", "type": "bind", "source": "/run/containers/storage/vfs-containers/" + PODMAN_ID + "/userdata/hosts"}],
        "linux": {"cgroupsPath": "/libpod_parent/libpod-" + PODMAN_ID},
    }),
    ("mount_order", "m", {
        "root": {"path": "r"},
        "mounts": [{"destination": "/z"}, {"destination": "/a/b"}, {"destination": "/a"}, {"destination": "/c"},
                   {"destination": "/"}, {"destination": "/b"}, {"destination": "/a/b/c"}, {"destination": "/ab"}, {"destination": "/0"}, {"destination": "/a/"}, {"destination": "/y"}, {"destination": "/b/./c"}, {"destination": "/x"}],
    }),
    ("text", "t", {
        "root": {"path": "r"},
        "process": {"args": ["sh", "-c", "echo \"quoted\" \\ back\nline\ttab\r\u0001\u001f\u007f caf\u00e9 \u65e5 \U0001F600 \u2028 </script>&"]},
        "zz": [None, True, False, 0, -1, -9223372036854775808, 18446744073709551615, {}, []],
    }),
]

# Texts that a strict reader refuses (the Go reader must refuse them too).
LAUNCH_REFUSED = [
    ("duplicate_key", '{"root":{"path":"r"},"hostname":"a","hostname":"b"}'),
    ("float", '{"root":{"path":"r"},"process":{"user":{"uid":1.0}}}'),
    ("exponent", '{"root":{"path":"r"},"process":{"user":{"uid":1e3}}}'),
    ("too_big", '{"root":{"path":"r"},"x":18446744073709551616}'),
    ("too_small", '{"root":{"path":"r"},"x":-9223372036854775809}'),
    ("lone_surrogate", '{"root":{"path":"r"},"hostname":"\\udc80"}'),
    ("high_surrogate_alone", '{"root":{"path":"r"},"hostname":"\\ud83dx"}'),
    ("nan", '{"root":{"path":"r"},"x":NaN}'),
    ("no_root", '{"process":{}}'),
    ("too_deep", '{"root":{"path":"r"},"x":' + "[" * 64 + "]" * 64 + "}"),
]


def container_records():
    """Container records (docs/FORMAT.md 1.4): content and the digest of each bank."""
    launch_digest = [c for c in launch() if c["name"] == "podman_ids"][0]["launch_sha256"]
    recs = [
        {"kind": "container", "name": "web1", "container_id": PODMAN_ID,
         "path": "/var/lib/containers/storage/overlay/61a5/merged", "sha256": hashlib.sha256(b"tree").hexdigest(), "size": 12,
         "launch_sha256": launch_digest, "reason": "launch:container:web1",
         "image_name": "localhost/hello:1", "image_id": "sha256:" + "bb" * 32, "image_digest": "sha256:" + "5f" * 32,
         "image_source": "podman", "time": "2026-11-28T15:42:05.1Z", "boot_id": BOOT},
        {"kind": "container", "name": "caf\u00e9 job", "container_id": "job-1", "path": "/srv/bundles/job/rootfs",
         "sha256": "", "size": 0, "launch_sha256": "00" * 32, "reason": "launch:container:caf\u00e9 job",
         "time": "2026-11-28T15:43:00Z", "boot_id": BOOT},
    ]
    return [{"content": c, "canonical_hex": canonical(c).hex(), "digests": digests(c)} for c in recs]


def launch():
    out = []
    for name, cid, cfg in LAUNCH_CASES:
        text = json.dumps(cfg, ensure_ascii=False, indent=1)
        normal = canon_json(normalize(parse_config(text), cid)).encode("utf-8")
        out.append({"name": name, "id": cid, "config": text, "normal": normal.decode("utf-8"),
                    "launch_sha256": hashlib.sha256(LAUNCH_HEADER + normal).hexdigest()})
    for name, text in LAUNCH_REFUSED:
        try:
            parse_config(text)
        except (Refused, ValueError):
            out.append({"name": name, "id": "x", "config": text, "refused": True})
            continue
        raise SystemExit("launch case %s was not refused" % name)
    return out


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
    log, expected = mixed_log()
    with open("mixed.log", "wb") as f:
        f.write(log)
    with open("mixed.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    with open("cases.json", "w") as f:
        json.dump(cases(), f, indent=1)
        f.write("\n")
    with open("tree.json", "w") as f:
        json.dump(tree(), f, indent=1)
        f.write("\n")
    with open("launch.json", "w") as f:
        json.dump(launch(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open("container.json", "w") as f:
        json.dump(container_records(), f, indent=1, ensure_ascii=False)
        f.write("\n")
