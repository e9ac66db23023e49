//! `relais-bench`: Relais measured against the limits of its own engines, side by side in one
//! run, on the same synthetic history (the demo's generator). See docs/BENCHMARKS.md.
//!
//! Every figure is the median of `--reps` repetitions; each pair alternates its two sides so
//! that drift of the machine hits both.

mod engines;
mod relais_side;

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "relais-bench", about = "Relais against bare NATS JetStream and PostgreSQL")]
pub struct Args {
    /// Number of events of the synthetic history.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Use 1,000,000 events.
    #[arg(long)]
    pub large: bool,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// Repetitions of each pair (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent HTTP clients of the ingest pair.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per ingest batch.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Seconds of the freshness run.
    #[arg(long, default_value_t = 60)]
    pub freshness_secs: u64,
    /// Events per second of the freshness run (in batches of 10).
    #[arg(long, default_value_t = 1000)]
    pub freshness_rate: u64,
}

/// One pair of figures.
#[derive(Debug, Clone)]
pub struct Pair {
    name: &'static str,
    relais: f64,
    limit: f64,
    note: String,
}

impl Pair {
    fn json(&self) -> Value {
        json!({ "name": self.name, "relais": self.relais, "limit": self.limit,
                "ratio": if self.limit > 0.0 { self.relais / self.limit } else { 0.0 }, "note": self.note })
    }
}

/// The median of some figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.large {
        args.events = 1_000_000;
    }
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    eprintln!("generating {} events of synthetic history", args.events);
    let history = relais_side::history(args.events);
    let dir = tempfile::tempdir()?;
    let fsync_per_sec = engines::fsync_rate(dir.path())?;
    eprintln!("fsync rate of this disk: {fsync_per_sec:.0}/s");

    let mut report = serde_json::Map::new();
    let mut all_pairs = Vec::new();
    for (label, sync_always) in [("always", true), ("server_default", false)] {
        eprintln!("== durability: {label}");
        let ingest = relais_side::ingest_pair(&args, &history, sync_always, dir.path()).await?;
        all_pairs.push((label, ingest));
    }
    let ingest_always = all_pairs.iter().find(|(l, _)| *l == "always").map(|(_, p)| p.relais).unwrap_or(0.0);
    let events_per_fsync = ingest_always / fsync_per_sec.max(1.0);

    eprintln!("== freshness");
    let freshness_default = relais_side::freshness(&args, false, dir.path()).await?;
    let freshness_always = relais_side::freshness(&args, true, dir.path()).await?;
    eprintln!("== memory");
    let (memory, replay) = relais_side::memory(&args, &history, dir.path()).await?;
    all_pairs.push(("server_default", replay));

    // Replay reads; its durability setting does not apply: it is reported with the primary pairs.
    let primary: Vec<Value> =
        all_pairs.iter().filter(|(l, p)| *l == "always" || p.name == "replay").map(|(_, p)| p.json()).collect();
    let secondary: Vec<Value> =
        all_pairs.iter().filter(|(l, p)| *l == "server_default" && p.name != "replay").map(|(_, p)| p.json()).collect();
    report.insert("events".into(), json!(args.events));
    report.insert("pairs".into(), Value::Array(primary));
    report.insert("pairs_server_default".into(), Value::Array(secondary));
    report.insert("fsync_per_sec".into(), json!(fsync_per_sec));
    report.insert("events_per_fsync".into(), json!(events_per_fsync));
    report.insert("freshness_p99_ms".into(), json!(freshness_default.p99_ms));
    report.insert(
        "freshness".into(),
        json!({ "server_default": freshness_default.json(), "always": freshness_always.json() }),
    );
    report.insert("peak_rss_mib".into(), json!({ "gateway": memory.gateway_mib, "projector": memory.projector_mib }));
    report.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));

    println!();
    println!("{:<28} {:>14} {:>14} {:>8}", "pair", "relais /s", "limit /s", "ratio");
    for (label, p) in &all_pairs {
        println!(
            "{:<28} {:>14.0} {:>14.0} {:>8.2}",
            format!("{} ({label})", p.name),
            p.relais,
            p.limit,
            if p.limit > 0.0 { p.relais / p.limit } else { 0.0 }
        );
    }
    println!("{:<28} {:>14.1}   (fsync {:.0}/s)", "events per fsync (always)", events_per_fsync, fsync_per_sec);
    println!(
        "{:<28} {:>14.1} ms  (always: {:.1} ms)",
        "freshness p99 (default)", freshness_default.p99_ms, freshness_always.p99_ms
    );
    println!("{:<28} {:>14.1} MiB (projector {:.1} MiB)", "peak RSS gateway", memory.gateway_mib, memory.projector_mib);
    std::fs::write(&args.json, serde_json::to_vec_pretty(&Value::Object(report))?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    eprintln!("figures written to {} in {:.0} s", args.json.display(), started.elapsed().as_secs_f64());
    Ok(())
}
