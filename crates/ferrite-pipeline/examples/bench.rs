//! Micro-benchmark: the filter+project example over 1M synthetic entries.
//! Prints ns/event; asserts nothing.
//! `cargo run -p ferrite-pipeline --release --example bench`

use ferrite_pipeline::{Entry, EntryId, Plan};
use std::time::Instant;

const N: usize = 1_000_000;
const BATCH: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let symbols: [&[u8]; 4] = [b"BTC", b"ETH", b"SOL", b"DOGE"];
    let data: Vec<[(Vec<u8>, Vec<u8>); 3]> = (0..N)
        .map(|i| {
            [
                (b"symbol".to_vec(), symbols[i % 4].to_vec()),
                (
                    b"price".to_vec(),
                    format!("{}.{}", 100 + i % 900, i % 100).into_bytes(),
                ),
                (b"volume".to_vec(), (i % 37).to_string().into_bytes()),
            ]
        })
        .collect();
    let cases = [
        ("filter only", "INSERT INTO o SELECT * FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')"),
        ("filter+project", "INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')"),
        ("project all", "INSERT INTO o SELECT symbol, price, volume, price * volume AS notional FROM trades"),
    ];
    for (name, sql) in cases {
        let mut plan = Plan::compile(sql)?;
        let mut out = Vec::with_capacity(BATCH);
        let mut produced = 0u64;
        let start = Instant::now();
        for chunk in data.chunks(BATCH) {
            let entries: Vec<Entry<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(i, f)| Entry::new(EntryId::new(i as u64, 0), f))
                .collect();
            out.clear();
            let st = plan.process_batch(&entries, &mut out);
            produced += st.output;
        }
        let ns = start.elapsed().as_nanos() as f64 / N as f64;
        println!("{name:>15}: {ns:7.1} ns/event ({produced} of {N} written)");
    }
    Ok(())
}
