//! # ferrite-bench
//!
//! The load generator behind `make bench` / `make bench-quick`
//! (`scripts/bench.sh`). It owns every load the benchmark runs against both
//! redis-server and ferrite, so both sides are driven by the same client code:
//!
//! * closed-loop XADD (one stream or many) and XRANGE, with pipelining
//!   ([`closed`]), and `fill` to load a stream;
//! * end-to-end fan-out latency (XADD -> N subscribers in XREAD BLOCK) and a
//!   consumer-group work queue (XREADGROUP + XACK) ([`e2e`]);
//! * harness helpers: readiness / recovery probe, free ports, an fsync
//!   latency probe, key cleanup ([`tools`]);
//! * the markdown table with medians and Ferrite/Redis ratios ([`report`]).
//!
//! The client is a lean RESP2 implementation on tokio ([`resp`]); by default
//! it runs on ONE thread (like redis-benchmark) and shares the machine's cores
//! with the server under test. It only ever connects to loopback addresses.
//! Each load prints one `RESULT k=v ...` line; it measures, never asserts a
//! time.

#![deny(unsafe_code)] // one `allow`: the monotonic clock read in stats.rs

mod closed;
mod e2e;
mod error;
mod pipe;
mod report;
mod resp;
mod stats;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::stats::ResultLine;

#[derive(Parser, Debug)]
#[command(
    name = "ferrite-bench",
    about = "Side-by-side stream load generator for redis-server and ferrite"
)]
struct Cli {
    /// Client threads: 1 = a single-threaded event loop, like redis-benchmark.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Closed-loop XADD (rows 1 and 2).
    Xadd(closed::XaddArgs),
    /// Closed-loop XRANGE COUNT n from random start IDs (row 3).
    Xrange(closed::XrangeArgs),
    /// Append entries to one stream as fast as one pipelined connection can.
    Fill(closed::FillArgs),
    /// One paced producer, N subscribers in XREAD BLOCK; end-to-end latency (row 4).
    Fanout(e2e::FanoutArgs),
    /// Producers + one consumer group (XREADGROUP + XACK) (row 5).
    Workqueue(e2e::WorkqueueArgs),
    /// Append a seeded `symbol/price/volume` stream (pipeline rows).
    TradesFill(pipe::TradesArgs),
    /// Ticks for the window rows: N entries 1 ms apart (explicit IDs), over
    /// many symbols.
    TicksFill(pipe::TicksArgs),
    /// Ferrite: a pipeline over the whole stream, timed until it has read it.
    Backfill(pipe::BackfillArgs),
    /// The same job as a consumer program (XREADGROUP, compute, XADD, XACK).
    Consumer(pipe::ConsumerArgs),
    /// Ferrite: XADD-to-result-visible latency through a pipeline.
    PipeLatency(pipe::LatencyArgs),
    /// Wait until a server answers PING (or XLEN == N); bounded.
    Ready(tools::ReadyArgs),
    /// Print free TCP ports on 127.0.0.1.
    FreePort(tools::FreePortArgs),
    /// Measure append + fdatasync latency in a directory.
    FsyncProbe(tools::FsyncProbeArgs),
    /// Delete benchmark keys.
    Del(tools::DelArgs),
    /// Render the results table (markdown) from the harness's result files.
    Report(report::ReportArgs),
}

fn run(cli: Cli) -> Result<Option<ResultLine>> {
    // Commands without network I/O need no runtime.
    let cmd = match cli.cmd {
        Cmd::FreePort(a) => {
            let ports: Vec<String> = tools::free_ports(a)?
                .iter()
                .map(|p| p.to_string())
                .collect();
            println!("{}", ports.join(" "));
            return Ok(None);
        }
        Cmd::FsyncProbe(a) => return tools::fsync_probe(a).map(Some),
        Cmd::Report(a) => {
            report::run(a)?;
            return Ok(None);
        }
        other => other,
    };
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let mut r = match cmd {
            Cmd::Xadd(a) => closed::xadd(a).await?,
            Cmd::Xrange(a) => closed::xrange(a).await?,
            Cmd::Fill(a) => closed::fill(a).await?,
            Cmd::Fanout(a) => e2e::fanout(a).await?,
            Cmd::Workqueue(a) => e2e::workqueue(a).await?,
            Cmd::Ready(a) => tools::ready(a).await?,
            Cmd::TradesFill(a) => pipe::trades_fill(a).await?,
            Cmd::TicksFill(a) => pipe::ticks_fill(a).await?,
            Cmd::Backfill(a) => pipe::backfill(a).await?,
            Cmd::Consumer(a) => pipe::consumer(a).await?,
            Cmd::PipeLatency(a) => pipe::latency(a).await?,
            Cmd::Del(a) => tools::del(a).await?,
            Cmd::FreePort(_) | Cmd::FsyncProbe(_) | Cmd::Report(_) => {
                unreachable!("handled without a runtime")
            }
        };
        r.int("client_threads", cli.threads as u64);
        Ok(Some(r))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sub = format!("{:?}", cli.cmd)
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("?")
        .to_lowercase();
    match run(cli) {
        Ok(Some(r)) => {
            r.print();
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrite-bench {sub}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
