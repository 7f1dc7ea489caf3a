#!/usr/bin/env python3
# Writes the committed seed corpus (fuzz/corpus-seed/). Run from fuzz/:
#   python3 make_seeds.py
# Input layouts: crates/ferrite-server/src/fuzzing.rs (parser::decode, commands::decode).
import os, struct
def parser_seed(name, data, unauth=False, bulk=4, splits=(), pad=0, pad_pos=0, pad_byte=0):
    flags = (1 if unauth else 0) | (bulk << 1) | ((0x80 | pad << 4) if pad else 0)
    v = bytes([flags, len(splits), pad_pos, pad_byte]) + b"".join(struct.pack("<H", s) for s in splits) + data
    open(f"corpus-seed/resp_parser/{name}", "wb").write(v)
def cmd_seed(name, steps):
    v = bytearray()
    for client, argv in steps:
        argv = [a.encode() if isinstance(a, str) else a for a in argv]
        v.append((client << 7) | (len(argv) - 1))
        for a in argv:
            if len(a) < 0x1F: v.append(0xE0 + len(a))
            else: v += bytes([0xFF, len(a)])
            v += a
    open(f"corpus-seed/commands/{name}", "wb").write(bytes(v))
parser_seed("pipeline-chunked", b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n*1\r\n$4\r\nPING\r\n", splits=(1, 5, 9, 14, 20))
parser_seed("inline-quoting", b"XADD s * f \"a b\" 'c\\'d' \"\\x41\\n\"\r\nPING\n\r\n", splits=(3, 12))
parser_seed("empty-commands", b"*0\r\n*-1\r\n\r\n \t \r\n*1\r\n$0\r\n\r\n")
parser_seed("wrong-bulk-prefix", b"*2\r\n$4\r\nECHO\r\n+a\r\n")
parser_seed("unauthenticated-limits", b"*11\r\n$1\r\na\r\n", unauth=True)
parser_seed("unauthenticated-bulk", b"*1\r\n$16385\r\n", unauth=True, splits=(6,))
parser_seed("huge-bulk-limit", b"*1\r\n$9223372036854775807\r\n", bulk=6)
parser_seed("long-inline-line", b"PING \r\nPING\r\n", pad=7, pad_pos=127, pad_byte=ord('a'), splits=(100, 40000))
parser_seed("long-count-line", b"*\r\n", pad=6, pad_pos=128, pad_byte=ord('1'), splits=(30000,))
parser_seed("unbalanced-quotes", b"SET \"a\"b c\r\n")
cmd_seed("stream-basics", [(0, ["XADD", "s", "*", "f", "v"]), (0, ["XADD", "s", "5-5", "f", "v"]), (0, ["XLEN", "s"]),
    (0, ["XRANGE", "s", "-", "+"]), (0, ["XREVRANGE", "s", "+", "-", "COUNT", "1"]), (0, ["XDEL", "s", "5-5"]),
    (0, ["XTRIM", "s", "MAXLEN", "~", "0"]), (0, ["TYPE", "s"])])
cmd_seed("consumer-groups", [(0, ["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]), (1, ["XADD", "s", "1-1", "f", "v"]),
    (0, ["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s", ">"]), (0, ["XPENDING", "s", "g", "-", "+", "10"]),
    (0, ["XCLAIM", "s", "g", "c2", "0", "1-1"]), (0, ["XAUTOCLAIM", "s", "g", "c", "0", "0-0"]), (0, ["XACK", "s", "g", "1-1"]),
    (0, ["XINFO", "STREAM", "s", "FULL"]), (0, ["XINFO", "GROUPS", "s"]), (0, ["XINFO", "CONSUMERS", "s", "g"]),
    (0, ["XGROUP", "DESTROY", "s", "g"])])
cmd_seed("transactions", [(0, ["WATCH", "s"]), (0, ["MULTI"]), (0, ["XADD", "s", "*", "a", "b"]), (1, ["XADD", "s", "*", "c", "d"]),
    (0, ["EXEC"]), (0, ["MULTI"]), (0, ["NOSUCH"]), (0, ["EXEC"]), (0, ["MULTI"]), (0, ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]), (0, ["EXEC"])])
cmd_seed("generic", [(0, ["HELLO", "3"]), (0, ["CONFIG", "GET", "*"]), (0, ["CONFIG", "SET", "stream-node-max-entries", "0"]),
    (0, ["CLIENT", "LIST"]), (0, ["SCAN", "0", "MATCH", "*s*", "COUNT", "10"]), (0, ["INFO"]), (0, ["COMMAND", "DOCS", "XADD"]),
    (0, ["KEYS", "["]), (0, ["SELECT", "15"]), (0, ["CLIENT", "INFO"]), (0, ["HELLO", "2"]), (0, ["RESET"])])
M = "18446744073709551615"
cmd_seed("edge-ids", [(0, ["XADD", "s", f"{M}-{M}", "f", "v"]), (0, ["XADD", "s", "*", "f", "v"]), (0, ["XSETID", "s", "0-1"]),
    (0, ["XRANGE", "s", f"({M}-{M}", "+"]), (0, ["XREVRANGE", "s", f"({M}-{M}", "-"]), (0, ["XREAD", "COUNT", "9223372036854775807", "STREAMS", "s", "0-0"]),
    (0, ["XTRIM", "s", "MINID", "=", f"{M}-{M}"]), (0, ["XADD", "s", "MAXLEN", "-1", "*", "f", "v"]), (0, ["XRANGE", "s", "-", "+", "COUNT", "-9223372036854775808"])])
# Regressions for what fuzzing found (docs/fuzzing.md).
parser_seed("nul-in-inline", b"PING \x00\r\nPING\r\nECHO \"a\x00\" b\r\n", splits=(3, 8))
parser_seed("nul-after-newline", b"PING\r\n\x00PING\r\n")
cmd_seed("bare-container-commands", [(0, ["COMMAND"]), (0, ["COMMAND", "COUNT"]), (0, ["CONFIG"]), (0, ["CLIENT"]),
    (0, ["COMMAND", "INFO"]), (0, ["COMMAND", "DOCS"])])
cmd_seed("glob-patterns", [(0, ["KEYS", "**"]), (0, ["KEYS", "[Z-a]"]), (0, ["SCAN", "0", "MATCH", "**"]),
    (0, ["CONFIG", "GET", "[Z-a]ort"]), (0, ["CONFIG", "GET", "[\\P]ort"]), (0, ["CONFIG", "GET", "*[", "\\"]),
    (0, ["KEYS", "[^"]), (0, ["COMMAND", "LIST", "FILTERBY", "PATTERN", "x*[a-"])])
