//! Input decoding and property checks shared by the fuzz targets (`fuzz/`)
//! and the replay test (`tests/fuzz_replay.rs`), so both exercise exactly the
//! same logic. Not part of the server's API; see `docs/fuzzing.md`.
//!
//! Both decoders accept *any* byte string (missing bytes read as zero), so
//! every fuzzer input is a valid test case, and both have an `encode` for
//! writing seed inputs by hand.

/// The `resp_parser` target: [`crate::protocol::RequestParser`] fed the same
/// bytes whole and in arbitrary chunks.
pub mod parser {
    use crate::protocol::{split_args, Limits, ProtocolError, RequestParser, INLINE_MAX};
    use bytes::{Bytes, BytesMut};

    /// `max_bulk_len` values to try: below CONFIG SET's minimum (the parser
    /// must not rely on it), the minimum, the default, and huge ones.
    pub const BULK_LIMITS: [u64; 8] = [
        0,
        1,
        16,
        1 << 20,
        512 << 20,
        1 << 40,
        i64::MAX as u64,
        u64::MAX,
    ];

    /// Lengths of the optional run of one repeated byte spliced into the data,
    /// so the fuzzer reaches the 16 KiB and 64 KiB limits with small inputs.
    pub const PAD_LENS: [usize; 8] = [
        0,
        16383,
        16385,
        INLINE_MAX - 2,
        INLINE_MAX - 1,
        INLINE_MAX,
        INLINE_MAX + 1,
        70000,
    ];

    /// Largest command (sum of argument lengths) that `run` round-trips.
    pub const ROUNDTRIP_MAX: usize = 4096;

    /// Most split points honoured (more are ignored).
    pub const MAX_SPLITS: usize = 15;

    /// A decoded input.
    #[derive(Debug, Clone)]
    pub struct Case {
        pub limits: Limits,
        /// The bytes "received" on the connection.
        pub data: Vec<u8>,
        /// Sorted, distinct offsets in `1..data.len()` where a read ends.
        pub splits: Vec<usize>,
    }

    /// Input layout (every byte optional; absent bytes are zero):
    ///
    /// ```text
    /// [flags] [nsplits] [pad_pos] [pad_byte] [split u16 LE] * (nsplits & 15) [data ...]
    /// flags: bit 0 unauthenticated, bits 1-3 BULK_LIMITS index,
    ///        bit 7 pad run, of PAD_LENS[bits 4-6] bytes
    /// ```
    ///
    /// The pad run is inserted at `pad_pos * data.len() / 255`; split offsets
    /// are taken modulo the final data length.
    pub fn decode(input: &[u8]) -> Case {
        let at = |i: usize| input.get(i).copied().unwrap_or(0);
        let flags = at(0);
        let nsplits = (at(1) as usize) & MAX_SPLITS;
        let (pad_pos, pad_byte) = (at(2) as usize, at(3));
        let limits = Limits {
            unauthenticated: flags & 1 != 0,
            max_bulk_len: BULK_LIMITS[((flags >> 1) & 7) as usize],
        };
        let pad_len = if flags & 0x80 != 0 {
            PAD_LENS[((flags >> 4) & 7) as usize]
        } else {
            0
        };
        let start = (4 + 2 * nsplits).min(input.len());
        let raw_splits: Vec<usize> = (0..nsplits)
            .map(|k| u16::from_le_bytes([at(4 + 2 * k), at(5 + 2 * k)]) as usize)
            .collect();
        let mut data = input[start..].to_vec();
        if pad_len > 0 {
            let pos = pad_pos * data.len() / 255;
            data.splice(pos..pos, std::iter::repeat_n(pad_byte, pad_len));
        }
        let mut splits: Vec<usize> = raw_splits
            .into_iter()
            .filter(|_| data.len() > 1)
            .map(|s| 1 + s % (data.len() - 1))
            .collect();
        splits.sort_unstable();
        splits.dedup();
        Case {
            limits,
            data,
            splits,
        }
    }

    /// The input that decodes to `data` with these settings (no pad run).
    pub fn encode(
        unauthenticated: bool,
        bulk_limit: usize,
        splits: &[u16],
        data: &[u8],
    ) -> Vec<u8> {
        assert!(bulk_limit < BULK_LIMITS.len() && splits.len() <= MAX_SPLITS);
        let mut v = vec![
            (unauthenticated as u8) | ((bulk_limit as u8) << 1),
            splits.len() as u8,
            0,
            0,
        ];
        for s in splits {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    /// What a connection saw: the commands, then the protocol error that
    /// closed it (if any), and what was left unparsed.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Outcome {
        pub commands: Vec<Vec<Bytes>>,
        pub error: Option<ProtocolError>,
        pub rest: Vec<u8>,
        pub idle: bool,
    }

    /// Feed `data` ending a read at each of `splits`, parsing like the
    /// connection loop does, and check the per-call invariants.
    pub fn feed(data: &[u8], splits: &[usize], limits: Limits) -> Outcome {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        let mut calls = 0usize;
        let mut prev = 0;
        for end in splits.iter().copied().chain(std::iter::once(data.len())) {
            buf.extend_from_slice(&data[prev..end]);
            prev = end;
            loop {
                // Never loops: every call makes progress or waits for more.
                calls += 1;
                assert!(
                    calls <= data.len() + splits.len() + 1,
                    "parser called {calls} times on {} bytes",
                    data.len()
                );
                let inline = parser.is_idle() && buf.first().is_some_and(|&b| b != b'*');
                let before = buf.len();
                match parser.parse(&mut buf, limits) {
                    Ok(Some(argv)) => {
                        assert!(buf.len() < before, "a command consumed no input");
                        check_command(argv.as_bytes(), inline, before - buf.len(), limits);
                        commands.push(argv.into_vec());
                    }
                    Ok(None) => {
                        check_pending(&buf[parser.read_up_to()..], limits);
                        break;
                    }
                    Err(error) => {
                        return Outcome {
                            commands,
                            error: Some(error),
                            rest: buf.to_vec(),
                            idle: parser.is_idle(),
                        }
                    }
                }
            }
        }
        Outcome {
            commands,
            error: None,
            rest: buf.to_vec(),
            idle: parser.is_idle(),
        }
    }

    /// Redis's limits on what a command may carry.
    fn check_command(argv: &[Bytes], inline: bool, consumed: usize, limits: Limits) {
        let total: usize = argv.iter().map(|a| a.len()).sum();
        if inline {
            assert!(total < consumed, "inline args longer than their line");
            return;
        }
        for a in argv {
            assert!(
                a.len() as u64 <= limits.max_bulk_len,
                "bulk over proto-max-bulk-len"
            );
        }
        if limits.unauthenticated {
            assert!(
                argv.len() <= 10,
                "unauthenticated multibulk of {}",
                argv.len()
            );
            assert!(
                argv.iter().all(|a| a.len() <= 16384),
                "unauthenticated bulk over 16384"
            );
        }
    }

    /// What the parser keeps while waiting for more input beyond the
    /// complete parts of the command being read: a bulk body (at most
    /// `max_bulk_len + 1` bytes of it), or a line of at most INLINE_MAX
    /// bytes. A line whose `\r` is the last byte received may be longer: the
    /// next byte decides (like Redis, which waits for the `\n` position).
    fn check_pending(buf: &[u8], limits: Limits) {
        if buf.last() == Some(&b'\r') {
            return;
        }
        let bound = (INLINE_MAX as u64).max(limits.max_bulk_len.saturating_add(1));
        assert!(
            buf.len() as u64 <= bound,
            "parser holds {} bytes waiting for more (limit {bound})",
            buf.len()
        );
    }

    fn too_big(e: &ProtocolError) -> bool {
        e.0.starts_with("too big ")
    }

    /// The property check of the `resp_parser` target.
    pub fn run(input: &[u8]) {
        let case = decode(input);
        let whole = feed(&case.data, &[], case.limits);
        let chunked = feed(&case.data, &case.splits, case.limits);
        // After an error the connection closes: what was left unread then
        // depends on how much had arrived, so only compare it without one.
        let same = whole.commands == chunked.commands
            && whole.error == chunked.error
            && (whole.error.is_some()
                || (whole.rest == chunked.rest && whole.idle == chunked.idle));
        if !same {
            // The one allowed difference, which Redis has too: a line longer
            // than INLINE_MAX is refused ("too big ...") when a read ends
            // before its terminator, but read whole when it arrives at once.
            let prefix = chunked.commands.len() <= whole.commands.len()
                && chunked.commands[..] == whole.commands[..chunked.commands.len()];
            assert!(
                chunked.error.as_ref().is_some_and(too_big) && prefix,
                "whole and chunked parses differ:\nwhole:   {whole:?}\nchunked: {chunked:?}\nsplits:  {:?}",
                case.splits
            );
        }
        for argv in &whole.commands {
            // Long arguments add nothing to the round trip but time.
            if argv.iter().map(|a| a.len()).sum::<usize>() <= ROUNDTRIP_MAX {
                roundtrip(argv);
            }
        }
    }

    /// Every parsed command re-encodes, as a multibulk and as a quoted inline
    /// command, to itself.
    fn roundtrip(argv: &[Bytes]) {
        let mut mb = BytesMut::new();
        mb.extend_from_slice(format!("*{}\r\n", argv.len()).as_bytes());
        for a in argv {
            mb.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            mb.extend_from_slice(a);
            mb.extend_from_slice(b"\r\n");
        }
        let open = Limits {
            max_bulk_len: u64::MAX,
            unauthenticated: false,
        };
        let again = feed(&mb, &[], open);
        let want: Vec<Vec<Bytes>> = if argv.is_empty() {
            vec![Vec::new()]
        } else {
            vec![argv.to_vec()]
        };
        assert_eq!(again.commands, want, "multibulk round trip");
        assert!(again.error.is_none() && again.rest.is_empty() && again.idle);

        let mut line = Vec::new();
        for a in argv {
            line.extend_from_slice(b" \"");
            for &c in a.iter() {
                line.extend_from_slice(format!("\\x{c:02x}").as_bytes());
            }
            line.push(b'"');
        }
        let split = split_args(&line).expect("quoted line must split");
        assert_eq!(split.len(), argv.len(), "inline round trip");
        assert!(split.iter().zip(argv).all(|(s, a)| s[..] == a[..]));
    }
}

/// The `commands` target: short command sequences run through one
/// [`ferrite_db::embedded::Session`] (and a second client on the same server).
pub mod commands {
    use bytes::Bytes;
    use ferrite_db::config::Config;
    use ferrite_db::embedded::Session;
    use ferrite_db::reply::Reply;

    /// Most commands run per input.
    pub const MAX_COMMANDS: usize = 64;
    /// Most arguments per command, the name included.
    pub const MAX_ARGS: usize = 16;

    /// Command names the first argument is drawn from (streams twice as often).
    pub const NAMES: &[&str] = &[
        "XADD",
        "XRANGE",
        "XREVRANGE",
        "XDEL",
        "XTRIM",
        "XLEN",
        "XREAD",
        "XSETID",
        "XINFO",
        "XGROUP",
        "XREADGROUP",
        "XACK",
        "XCLAIM",
        "XAUTOCLAIM",
        "XPENDING",
        "XADD",
        "XRANGE",
        "XREVRANGE",
        "XDEL",
        "XTRIM",
        "XLEN",
        "XREAD",
        "XSETID",
        "XINFO",
        "XGROUP",
        "XREADGROUP",
        "XACK",
        "XCLAIM",
        "XAUTOCLAIM",
        "XPENDING",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        "SELECT",
        "CONFIG",
        "HELLO",
        "CLIENT",
        "SCAN",
        "KEYS",
        "DEL",
        "UNLINK",
        "EXISTS",
        "TYPE",
        "RENAME",
        "RENAMENX",
        "DBSIZE",
        "FLUSHDB",
        "FLUSHALL",
        "RANDOMKEY",
        "PING",
        "ECHO",
        "AUTH",
        "RESET",
        "INFO",
        "COMMAND",
        "TIME",
        "LASTSAVE",
        "QUIT",
        "SET",
        "GET",
        "xadd",
        "Xrange",
    ];

    /// Arguments: keys, keywords, subcommands, special IDs and numbers.
    pub const WORDS: &[&str] = &[
        // keys, groups, consumers, fields
        "s",
        "s",
        "s",
        "s2",
        "k",
        "{s}",
        "g",
        "g",
        "g2",
        "c",
        "c2",
        "f",
        "v",
        // stream keywords
        "MAXLEN",
        "MINID",
        "LIMIT",
        "COUNT",
        "BLOCK",
        "STREAMS",
        "NOMKSTREAM",
        "GROUP",
        "NOACK",
        "IDLE",
        "TIME",
        "RETRYCOUNT",
        "FORCE",
        "JUSTID",
        "LASTID",
        "ENTRIESREAD",
        "MKSTREAM",
        "CREATE",
        "SETID",
        "DESTROY",
        "CREATECONSUMER",
        "DELCONSUMER",
        "STREAM",
        "GROUPS",
        "CONSUMERS",
        "FULL",
        "HELP",
        "maxlen",
        "streams",
        // generic subcommands and options
        "GET",
        "SET",
        "RESETSTAT",
        "ID",
        "SETNAME",
        "GETNAME",
        "INFO",
        "LIST",
        "KILL",
        "MATCH",
        "TYPE",
        "stream",
        "none",
        "AUTH",
        "default",
        "SETNAME",
        "DOCS",
        "ALL",
        "SKIPME",
        "yes",
        "USER",
        "ADDR",
        "LADDR",
        "embedded:0",
        "NOW",
        "ABORT",
        "SAVE",
        "everything",
        // config parameters
        "proto-max-bulk-len",
        "stream-node-max-entries",
        "stream-node-max-bytes",
        "requirepass",
        "maxclients",
        "loglevel",
        "databases",
        "notice",
        "client-query-buffer-limit",
        "1mb",
        // special IDs and ranges
        "~",
        "=",
        "*",
        "-",
        "+",
        "(",
        "$",
        ">",
        "0-0",
        "0-1",
        "1-0",
        "1-1",
        "1-*",
        "0-*",
        "5-5",
        "(0-1",
        "(1",
        "(+",
        "(-",
        "18446744073709551615-18446744073709551615",
        "18446744073709551615-18446744073709551614",
        "18446744073709551614-18446744073709551615",
        "18446744073709551615-*",
        "18446744073709551615",
        "(18446744073709551615-18446744073709551615",
        "18446744073709551616",
        "1-18446744073709551616",
        "-1-1",
        "1--1",
        "1-",
        "-1",
        // numbers
        "0",
        "0",
        "1",
        "1",
        "2",
        "3",
        "5",
        "10",
        "100",
        "1000",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-2",
        "15",
        "16",
        "01",
        "+1",
        "-0",
        "1.5",
        "0x10",
        "",
        "*",
        "*s*",
        "[",
        "\\",
    ];

    /// One command: which client sends it (0 or 1), and its argv.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Step {
        pub client: usize,
        pub argv: Vec<Bytes>,
    }

    /// Input layout, repeated until the input ends or MAX_COMMANDS:
    ///
    /// ```text
    /// [head] [name arg] [arg] * (head & 15)
    /// head: bits 0-3 argument count after the name, bit 7 client 1 instead of 0
    /// name arg: t < 0xE0 -> NAMES[t % len]; else an arg as below
    /// arg:  t < 0xA0 -> WORDS[t % len]
    ///       0xA0..0xC0 -> a number from the next byte (see `number`)
    ///       0xC0..0xE0 -> a stream ID from the next 2 bytes (see `stream_id`)
    ///       0xE0..0xFF -> the next (t - 0xE0) bytes verbatim
    ///       0xFF -> [len] then len bytes verbatim
    /// ```
    pub fn decode(input: &[u8]) -> Vec<Step> {
        let mut r = Reader { input, pos: 0 };
        let mut steps = Vec::new();
        while !r.done() && steps.len() < MAX_COMMANDS {
            let head = r.byte();
            let t = r.byte();
            let mut argv = Vec::with_capacity(1 + (head & 15) as usize);
            argv.push(if t < 0xE0 {
                Bytes::from_static(NAMES[t as usize % NAMES.len()].as_bytes())
            } else {
                r.arg(t)
            });
            for _ in 0..(head & 15) {
                let t = r.byte();
                argv.push(r.arg(t));
            }
            steps.push(Step {
                client: (head >> 7) as usize,
                argv,
            });
        }
        steps
    }

    /// The input that decodes to these commands, independent of the word
    /// lists (every argument verbatim). Panics past MAX_ARGS or 255 bytes.
    pub fn encode(steps: &[(usize, &[&[u8]])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (client, argv) in steps {
            assert!(!argv.is_empty() && argv.len() <= MAX_ARGS);
            v.push(((*client as u8) << 7) | (argv.len() - 1) as u8);
            for a in argv.iter() {
                if a.len() < 0x1F {
                    v.push(0xE0 + a.len() as u8);
                } else {
                    v.push(0xFF);
                    v.push(u8::try_from(a.len()).expect("argument over 255 bytes"));
                }
                v.extend_from_slice(a);
            }
        }
        v
    }

    struct Reader<'a> {
        input: &'a [u8],
        pos: usize,
    }

    impl Reader<'_> {
        fn done(&self) -> bool {
            self.pos >= self.input.len()
        }
        fn byte(&mut self) -> u8 {
            let b = self.input.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            b
        }
        fn take(&mut self, n: usize) -> Bytes {
            let start = self.pos.min(self.input.len());
            let end = (self.pos + n).min(self.input.len());
            self.pos += n;
            Bytes::copy_from_slice(&self.input[start..end])
        }
        fn arg(&mut self, t: u8) -> Bytes {
            match t {
                0..=0x9F => Bytes::from_static(WORDS[t as usize % WORDS.len()].as_bytes()),
                0xA0..=0xBF => Bytes::from(number(self.byte())),
                0xC0..=0xDF => {
                    let (a, b) = (self.byte(), self.byte());
                    Bytes::from(stream_id(t, a, b))
                }
                0xE0..=0xFE => self.take((t - 0xE0) as usize),
                0xFF => {
                    let n = self.byte() as usize;
                    self.take(n)
                }
            }
        }
    }

    /// Interesting 64-bit values: edges of i64/u64 and small numbers.
    fn interesting(b: u8) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            u64::MAX,
            u64::MAX - 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u32::MAX as u64,
            1_700_000_000_000,
        ];
        if b & 0x80 != 0 {
            EDGES[(b & 7) as usize]
        } else {
            (b & 0x7F) as u64
        }
    }

    /// A decimal number: bit 6 of `b` negates (as i64), the rest via `interesting`.
    fn number(b: u8) -> String {
        let v = interesting(b & 0xBF);
        if b & 0x40 != 0 {
            format!("{}", (v as i64).wrapping_neg())
        } else {
            format!("{v}")
        }
    }

    /// `ms-seq`, `ms`, `ms-*` or `(ms-seq` by the low bits of `t`.
    fn stream_id(t: u8, a: u8, b: u8) -> String {
        let (ms, seq) = (interesting(a), interesting(b));
        match t & 3 {
            0 => format!("{ms}-{seq}"),
            1 => format!("{ms}"),
            2 => format!("{ms}-*"),
            _ => format!("({ms}-{seq}"),
        }
    }

    /// Run the commands of `input` through a fresh server with two clients,
    /// calling `check` with every command and its reply. Panics if a
    /// command panics (which is what the target looks for).
    pub fn run(input: &[u8], check: &mut dyn FnMut(&[Bytes], &Reply)) {
        let steps = decode(input);
        let mut a = Session::with_config(Config::default());
        let mut b = Session::attach(a.shared().clone());
        for step in steps {
            let s = if step.client == 0 { &mut a } else { &mut b };
            let reply = s.call(step.argv.clone());
            check(&step.argv, &reply);
            check_errors(&reply);
        }
    }

    /// Every error reply, at any depth (EXEC nests them), starts with an
    /// upper-case code (`ERR`, `WRONGTYPE`, `NOGROUP`...) as clients expect.
    pub fn check_errors(reply: &Reply) {
        match reply {
            Reply::Error(e) => {
                let code = e.split(|&c| c == b' ').next().unwrap_or(&e[..]);
                assert!(
                    !code.is_empty()
                        && code
                            .iter()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'),
                    "error reply without an upper-case code: {:?}",
                    String::from_utf8_lossy(e)
                );
            }
            Reply::Array(v) | Reply::Set(v) | Reply::Push(v) => v.iter().for_each(check_errors),
            Reply::Map(m) | Reply::KeyedArray(m) => m.iter().for_each(|(k, v)| {
                check_errors(k);
                check_errors(v);
            }),
            _ => {}
        }
    }
}
