#!/usr/bin/env python3
"""Record the stream fixture (crates/ferrite-db/tests/fixtures/redis-7.0.15.txt)
from a real redis-server 7.0.

The fixture is its own workload: every line that is not a recorded result
(comments, `reset`, `config`, `def`/`end` macros, `run`, `fill`, and each
command's left-hand side) is replayed against a fresh redis-server on a free
port, and the results are written back in the same format: each
`<CMD> <args> => <reply>` gets Redis's reply, each `state ...` line the
stream's XINFO STREAM fields and its nodes (master ID and listpack bytes, read
from the DUMP payload). The format is described in
crates/ferrite-db/tests/redis_fixtures.rs.

Usage: scripts/record-redis-fixtures.py [IN] [OUT]   (default: the fixture, to stdout)
Check: scripts/record-redis-fixtures.py | diff - crates/ferrite-db/tests/fixtures/redis-7.0.15.txt

No normalisation is needed: `XADD * ...` takes its ID from the clock only
when the stream's last ID is behind it, and the workload sets a far-future
last ID first wherever it uses `*`, so every reply is the same on any day
(recording again gives the committed file byte for byte). The Rust test runs
each command with the recorded reply's milliseconds as the clock, which
reproduces Redis's choice either way.
"""
import os, socket, struct, subprocess, sys, tempfile, time

KEY = b"s"

ERRORS = {
    "The ID specified in XADD must be greater than 0-0": "IdZero",
    "The ID specified in XADD is equal or smaller than the target stream top item": "IdTooSmall",
    "The stream has exhausted the last possible ID, unable to add more items": "Exhausted",
    "Invalid stream ID specified as stream command argument": "Invalid",
    "invalid start ID for the interval": "InvalidStart",
    "invalid end ID for the interval": "InvalidEnd",
    "The ID specified in XSETID is smaller than the target stream top item": "IdSmallerThanTop",
    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id": "MaxDeletedGreaterThanId",
    "The entries_added specified in XSETID is smaller than the target stream length": "EntriesAddedSmallerThanLength",
}


def decode(tok):
    if tok == "@":
        return b""
    if tok.startswith("@"):
        hexb, n = tok[1:].split("*")
        return bytes([int(hexb, 16)]) * int(n)
    out, i = bytearray(), 0
    while i < len(tok):
        if tok[i] == "%":
            out.append(int(tok[i + 1:i + 3], 16))
            i += 3
        else:
            out += tok[i].encode()
            i += 1
    return bytes(out)


def encode(b):
    if not b:
        return "@"
    if len(b) >= 16 and all(c == b[0] for c in b):
        return "@%02x*%d" % (b[0], len(b))
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-_*()")
    return "".join(chr(c) if c in safe else "%%%02x" % c for c in b)


def fnv64(data):
    h = 0xCBF29CE484222325
    for c in data:
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.read()

    def read(self):
        line = self.f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Exception(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(line)


def rdb_len(b, i):
    """An RDB length: (value, next index)."""
    t = b[i] >> 6
    if t == 0:
        return b[i] & 0x3F, i + 1
    if t == 1:
        return ((b[i] & 0x3F) << 8) | b[i + 1], i + 2
    if b[i] == 0x80:
        return struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
    if b[i] == 0x81:
        return struct.unpack(">Q", b[i + 1:i + 9])[0], i + 9
    raise ValueError("encoded length where a plain one was expected")


def rdb_string(b, i):
    n, i = rdb_len(b, i)
    return b[i:i + n], i + n


def nodes(dump):
    """(master ID, listpack bytes) of each node of a stream DUMP payload
    (RDB_TYPE_STREAM_LISTPACKS_2 = 19 in Redis 7.0; rdbcompression is off)."""
    if dump[0] not in (15, 19, 21):
        raise ValueError("not a stream dump: type %d" % dump[0])
    count, i = rdb_len(dump, 1)
    out = []
    for _ in range(count):
        key, i = rdb_string(dump, i)
        lp, i = rdb_string(dump, i)
        ms, seq = struct.unpack(">QQ", key)
        out.append(("%d-%d" % (ms, seq), struct.unpack("<I", lp[:4])[0]))
    return out


def state(c, with_blocks):
    info = c.call("XINFO", "STREAM", KEY)
    if isinstance(info, Exception):
        return "state nokey"
    f = dict(zip([k.decode() if isinstance(k, bytes) else k for k in info[0::2]], info[1::2]))
    txt = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    head = "state %d %d %s %s %d %s" % (
        f["length"], f["radix-tree-keys"], txt(f["last-generated-id"]),
        txt(f["max-deleted-entry-id"]), f["entries-added"], txt(f["recorded-first-entry-id"]))
    if not with_blocks:
        return head + " | *"
    blocks = ["%s:%d" % n for n in nodes(c.call("DUMP", KEY))]
    if len(blocks) <= 6:
        return head + " | " + " ".join(blocks)
    total = sum(int(b.split(":")[1]) for b in blocks)
    return head + " | #%d:%d:%016x" % (len(blocks), total, fnv64(" ".join(blocks).encode()))


def reply_text(cmd, r):
    if isinstance(r, Exception):
        msg = str(r)
        msg = msg[4:] if msg.startswith("ERR ") else msg
        return "!" + ERRORS.get(msg, "Unknown(%s)" % msg)
    if cmd in ("XRANGE", "XREVRANGE"):
        parts = [",".join([e[0].decode()] + [encode(x) for x in e[1]]) for e in r]
        return "[" + " ".join(parts) + "]"
    if isinstance(r, bytes):
        return r.decode()
    return str(r)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "crates", "ferrite-db", "tests", "fixtures", "redis-7.0.15.txt")
    out = open(sys.argv[2], "w") if len(sys.argv) > 2 else sys.stdout
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with tempfile.TemporaryDirectory() as d:
        srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                "--dir", d, "--rdbcompression", "no"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    c = Conn(port)
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                sys.exit("redis-server did not start")
            ver = c.call("INFO", "server")
            if b"redis_version:7.0." not in ver:
                sys.exit("the fixture is recorded from Redis 7.0")
            macros, defining = {}, None
            for raw in open(src):
                line = raw.rstrip("\n")
                words = line.split(" ")
                if defining is not None:
                    out.write(line + "\n")
                    if line == "end":
                        macros[defining[0]] = defining[1]
                        defining = None
                    else:
                        defining[1].append(words)
                    continue
                if not line or line.startswith("#"):
                    out.write(line + "\n")
                elif words[0] == "reset":
                    c.call("DEL", KEY)
                    out.write(line + "\n")
                elif words[0] == "config":
                    c.call("CONFIG", "SET", "stream-node-max-entries", words[1],
                           "stream-node-max-bytes", words[2])
                    out.write(line + "\n")
                elif words[0] == "def":
                    defining = (words[1], [])
                    out.write(line + "\n")
                elif words[0] == "run":
                    for m in macros[words[1]]:
                        c.call(m[0], KEY, *[decode(w) for w in m[1:]])
                    out.write(line + "\n")
                elif words[0] == "fill":
                    for i in range(int(words[1]), int(words[2]) + 1):
                        c.call("XADD", KEY, "%d-1" % i, "a", "1")
                    out.write(line + "\n")
                elif words[0] == "state":
                    out.write(state(c, not line.endswith("| *")) + "\n")
                else:
                    lhs = line.split(" => ")[0]
                    w = lhs.split(" ")
                    r = c.call(w[0], KEY, *[decode(x) for x in w[1:]])
                    out.write("%s => %s\n" % (lhs, reply_text(w[0], r)))
        finally:
            srv.terminate()
            srv.wait()


if __name__ == "__main__":
    main()
