//! The fuzz targets' checks without libFuzzer, in the normal test suite: the
//! committed seed corpus (`fuzz/corpus-seed/`) plus a fixed number of seeded
//! pseudo-random inputs through `ferrite_server::fuzzing`, the same code the
//! targets in `fuzz/` run. Deterministic: same inputs on every run.

#[path = "support/resp_check.rs"]
mod resp_check;

use ferrite_server::fuzzing::{commands, parser};
use std::path::PathBuf;

/// SplitMix64: a tiny fixed generator, so inputs never change with a
/// dependency's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus-seed")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read seed");
            (p, data)
        })
        .collect()
}

/// RESP-shaped noise: request fragments, quotes and escapes, random bytes.
fn resp_like(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"*1\r\n",
        b"*2\r\n",
        b"*3\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*11\r\n",
        b"*2147483648\r\n",
        b"$0\r\n",
        b"$1\r\n",
        b"$3\r\n",
        b"$4\r\n",
        b"$16\r\n",
        b"$17\r\n",
        b"$-1\r\n",
        b"$16385\r\n",
        b"PING",
        b"XADD",
        b"s",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\"",
        b"'",
        b"\\x4",
        b"\\x41",
        b"\\",
        b"\\'",
        b"*",
        b"$",
        b"+OK\r\n",
        b"\x00",
        b"01",
        b"9",
    ];
    let mut data = Vec::new();
    for _ in 0..rng.below(24) {
        if rng.below(5) == 0 {
            let n = rng.below(8);
            data.extend(rng.bytes(n));
        } else {
            data.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
    }
    // Header bytes: flags (pad run 1 time in 8), splits, pad position/byte.
    let mut flags = rng.next() as u8 & 0x0F;
    if rng.below(8) == 0 {
        flags |= 0x80 | (rng.below(8) as u8) << 4;
    }
    let nsplits = rng.below(parser::MAX_SPLITS + 1);
    let mut input = vec![
        flags,
        nsplits as u8,
        rng.next() as u8,
        b"a1\r*$ \""[rng.below(7)],
    ];
    input.extend(rng.bytes(2 * nsplits));
    input.extend(data);
    input
}

#[test]
fn resp_parser_seeds_and_random_inputs() {
    for (path, data) in seeds("resp_parser") {
        eprintln!("seed {}", path.display());
        parser::run(&data);
    }
    let mut rng = Rng(0x5EED_0001);
    for _ in 0..3000 {
        let input = if rng.below(4) == 0 {
            let n = rng.below(64);
            rng.bytes(n)
        } else {
            resp_like(&mut rng)
        };
        parser::run(&input);
    }
}

fn run_commands(input: &[u8]) {
    commands::run(input, &mut |argv, reply| {
        resp_check::check_reply(argv, reply)
    });
}

#[test]
fn commands_seeds_and_random_inputs() {
    for (path, data) in seeds("commands") {
        eprintln!("seed {}", path.display());
        run_commands(&data);
    }
    let mut rng = Rng(0x5EED_0002);
    for _ in 0..2000 {
        let n = rng.below(160);
        let input = rng.bytes(n);
        run_commands(&input);
    }
}

#[test]
fn encoders_invert_decoders() {
    let input = commands::encode(&[
        (0, &[b"XADD", b"s", b"*", b"f", b"v"]),
        (1, &[b"XRANGE", b"s", b"-", &[b'+'; 40]]),
    ]);
    let steps = commands::decode(&input);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].client, 0);
    assert_eq!(&steps[0].argv[4][..], b"v");
    assert_eq!(steps[1].client, 1);
    assert_eq!(steps[1].argv[3].len(), 40);

    let input = parser::encode(true, 2, &[3, 1, 3], b"*1\r\n$4\r\nPING\r\n");
    let case = parser::decode(&input);
    assert!(case.limits.unauthenticated);
    assert_eq!(case.limits.max_bulk_len, parser::BULK_LIMITS[2]);
    assert_eq!(case.splits, vec![2, 4]);
    assert_eq!(case.data, b"*1\r\n$4\r\nPING\r\n");
}
