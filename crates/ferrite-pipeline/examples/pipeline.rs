//! Builds the same kind of plan from SQL and from the builder, and runs a
//! few entries through each: `cargo run -p ferrite-pipeline --example pipeline`.

use bytes::Bytes;
use ferrite_pipeline::{Entry, EntryId, PipelineBuilder, Plan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sql = "INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional \
               FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')";
    let mut plan = Plan::compile(sql)?;
    println!("{}\n", plan.explain());

    let rows: [&[(&[u8], &[u8])]; 3] = [
        &[
            (b"symbol", b"BTC"),
            (b"price", b"64000.5"),
            (b"volume", b"12"),
        ],
        &[(b"symbol", b"ETH"), (b"price", b"3100"), (b"volume", b"3")],
        &[(b"symbol", b"BTC"), (b"price", b"oops"), (b"volume", b"40")],
    ];
    let entries: Vec<Entry<'_>> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(1000 + i as u64, 0), f))
        .collect();
    let mut out = Vec::new();
    let stats = plan.process_batch(&entries, &mut out);
    for r in &out {
        println!("{} -> {:?}", r.source_id, r.fields);
    }
    println!("{stats:?}\n");

    let mut built = PipelineBuilder::new()
        .source("trades")
        .filter(|e| {
            e.num(b"volume")
                .is_some_and(|v| matches!(v, ferrite_pipeline::Num::Int(v) if v > 10))
        })
        .map(|e| {
            Ok(vec![(
                Bytes::from_static(b"symbol"),
                Bytes::copy_from_slice(e.get(b"symbol").unwrap_or_default()),
            )])
        })
        .sink("big_symbols")
        .build()?;
    println!("{}\n", built.explain());
    let mut out = Vec::new();
    let stats = built.process_batch(&entries, &mut out);
    for r in &out {
        println!("{} -> {:?}", r.source_id, r.fields);
    }
    println!("{stats:?}");
    Ok(())
}
