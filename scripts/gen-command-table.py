#!/usr/bin/env python3
"""Capture Redis 7.0's own COMMAND INFO / COMMAND DOCS metadata for every command,
as raw RESP3 frames, into crates/ferrite-db/src/cmd/redis_commands.resp3 (Ferrite
keeps the entries of the commands it implements when it loads them).

Ferrite derives its dispatch table (arity, flags, key positions, subcommands) and its
COMMAND INFO/DOCS replies from this data, so arity errors and redis-cli hints match Redis.
Usage: scripts/gen-command-table.py [port]   (a redis-server 7.0 must listen on that port)
"""
import socket, sys, os



def read_frame(f):
    """Return the raw bytes of one RESP3 frame read from file-like f."""
    line = f.readline()
    t = line[:1]
    if t in b"+-:_,#(":
        return line
    if t in b"$=!":
        n = int(line[1:-2])
        if n < 0:
            return line
        return line + f.read(n + 2)
    if t in b"*~>%|":
        n = int(line[1:-2])
        if n < 0:
            return line
        if t in b"%|":
            n *= 2
        out = line
        for _ in range(n):
            out += read_frame(f)
        return out
    raise ValueError("unexpected frame %r" % line)

def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
s.sendall(cmd("HELLO", "3"))
read_frame(f)
s.sendall(cmd("COMMAND", "INFO"))
info = read_frame(f)
s.sendall(cmd("COMMAND", "DOCS"))
docs = read_frame(f)
s.sendall(cmd("INFO", "server"))
ver = [l for l in read_frame(f).split(b"\r\n") if l.startswith(b"redis_version:")]
here = os.path.dirname(os.path.abspath(__file__))
dst = os.path.join(here, "..", "crates", "ferrite-db", "src", "cmd", "redis_commands.resp3")
with open(dst, "wb") as out:
    out.write(info)
    out.write(docs)
print("wrote", dst, len(info) + len(docs), "bytes from", ver[0].decode() if ver else "?")
