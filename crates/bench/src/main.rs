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
    /// Number of events of the synthetic history (the default run stays under 5 minutes on a
    /// 2-core machine).
    #[arg(long, default_value_t = 50_000)]
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
    /// Events the instance holds before the freshness run starts (published, projected and
    /// analysed, as on a running system); 0 measures a new, empty deployment. Default: 20,000,
    /// or `--events` when fewer.
    #[arg(long)]
    pub freshness_history: Option<usize>,
    /// Run only these parts (while tuning one): `ingest`, `freshness`, `loaded` (memory,
    /// replay and rebuild on one loaded instance). Default: everything.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl Args {
    /// Events the instance holds before the freshness run.
    pub fn freshness_history(&self) -> usize {
        self.freshness_history.unwrap_or(self.events.min(20_000))
    }

    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// One pair of figures.
#[derive(Debug, Clone)]
pub struct Pair {
    name: &'static str,
    relais: f64,
    limit: f64,
    note: String,
    /// CPU microseconds per event by process, for each side (where counted).
    cpu: Option<Value>,
    /// More figures of the pair, as keys of its JSON object.
    more: serde_json::Map<String, Value>,
}

impl Pair {
    fn json(&self) -> Value {
        let mut v = json!({ "name": self.name, "relais": self.relais, "limit": self.limit,
                "ratio": if self.limit > 0.0 { self.relais / self.limit } else { 0.0 }, "note": self.note });
        if let (Some(cpu), Some(obj)) = (&self.cpu, v.as_object_mut()) {
            obj.insert("cpu_us_per_event_by_process".into(), cpu.clone());
        }
        if let Some(obj) = v.as_object_mut() {
            obj.extend(self.more.clone());
        }
        v
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
    if args.reps < 3 {
        eprintln!(
            "--reps {}: the pairs' figures are not medians of three repetitions (a smoke run, not a measurement)",
            args.reps
        );
    }
    eprintln!("generating {} events of synthetic history", args.events);
    let history = relais_side::history(args.events);
    let dir = tempfile::tempdir()?;
    let fsync_per_sec = engines::fsync_rate(dir.path())?;
    eprintln!("fsync rate of this disk: {fsync_per_sec:.0}/s");

    let mut report = serde_json::Map::new();
    let mut all_pairs = Vec::new();
    let mut syncs = None;
    if args.runs("ingest") {
        for (label, sync_always) in [("always", true), ("server_default", false)] {
            eprintln!("== durability: {label}");
            let (ingest, counted) = relais_side::ingest_pair(&args, &history, sync_always, dir.path()).await?;
            all_pairs.push((label, ingest));
            if sync_always {
                syncs = counted;
            }
        }
    }
    let ingest_always = all_pairs.iter().find(|(l, _)| *l == "always").map(|(_, p)| p.relais).unwrap_or(0.0);
    // Counted: events stored ÷ fsync calls nats-server made while Relais ingested (perf).
    // Otherwise the lower bound: the events each sync must carry at the disk's fsync rate.
    let (events_per_fsync, fsync_method) = match syncs {
        Some(s) => (s.events_per_sync(), "counted"),
        None => (ingest_always / fsync_per_sec.max(1.0), "bound"),
    };

    let (mut freshness_default, mut freshness_always) = (None, None);
    if args.runs("freshness") {
        eprintln!("== freshness");
        freshness_default = Some(relais_side::freshness(&args, false, dir.path()).await?);
        freshness_always = Some(relais_side::freshness(&args, true, dir.path()).await?);
    }
    let mut memory = None;
    if args.runs("loaded") {
        eprintln!("== memory, replay, rebuild");
        let loaded = relais_side::loaded(&args, &history, dir.path()).await?;
        all_pairs.push(("reads", loaded.rebuild));
        all_pairs.push(("reads", loaded.replay));
        memory = Some(loaded.memory);
    }

    // Rebuild and replay write nothing to the log: the log's durability setting does not apply
    // to them; they are reported with the primary pairs.
    let primary: Vec<Value> =
        all_pairs.iter().filter(|(l, _)| *l == "always" || *l == "reads").map(|(_, p)| p.json()).collect();
    let secondary: Vec<Value> =
        all_pairs.iter().filter(|(l, _)| *l == "server_default").map(|(_, p)| p.json()).collect();
    report.insert("events".into(), json!(args.events));
    report.insert("reps".into(), json!(args.reps));
    // Medians of `reps` alternated repetitions: the pairs. One run each (the run's budget):
    // the freshness runs, the peak RSS, the fsync count.
    report.insert(
        "single_run_figures".into(),
        json!(["freshness_p99_ms", "freshness", "peak_rss_mib", "events_per_fsync"]),
    );
    report.insert("pairs".into(), Value::Array(primary));
    report.insert("pairs_server_default".into(), Value::Array(secondary));
    report.insert("fsync_per_sec".into(), json!(fsync_per_sec));
    report.insert("events_per_fsync".into(), json!(events_per_fsync));
    report.insert(
        "durable_ingest".into(),
        json!({ "method": fsync_method, "events": syncs.map(|s| s.events), "fsync_calls": syncs.map(|s| s.syncs),
                "bound_events_per_fsync": ingest_always / fsync_per_sec.max(1.0) }),
    );
    if let (Some(d), Some(a)) = (&freshness_default, &freshness_always) {
        report.insert("freshness_p99_ms".into(), json!(d.p99_ms));
        report.insert("freshness".into(), json!({ "server_default": d.json(), "always": a.json() }));
    }
    if let Some(m) = &memory {
        report.insert("peak_rss_mib".into(), json!({ "gateway": m.gateway_mib, "projector": m.projector_mib }));
    }
    report.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));

    println!();
    println!("{:<28} {:>14} {:>14} {:>8}", "pair", "relais /s", "limit /s", "ratio");
    for (label, p) in &all_pairs {
        println!(
            "{:<28} {:>14.0} {:>14.0} {:>8.2}",
            if *label == "reads" { p.name.to_owned() } else { format!("{} ({label})", p.name) },
            p.relais,
            p.limit,
            if p.limit > 0.0 { p.relais / p.limit } else { 0.0 }
        );
    }
    for (_, p) in all_pairs.iter().filter(|(_, p)| p.name == "rebuild") {
        let figure = |k: &str| p.more.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "{:<28} {:>14.2}   (COPY {:.2} s / rebuild {:.2} s; {:.1} view rows per event)",
            "rebuild time ratio",
            figure("time_ratio"),
            figure("limit_seconds"),
            figure("relais_seconds"),
            figure("rows_per_event")
        );
        println!("{:<28} {:>14.1} MiB", "peak RSS rebuild process", figure("rebuild_peak_rss_mib"));
    }
    if args.runs("ingest") {
        println!(
            "{:<28} {:>14.1}   ({fsync_method}; disk fsync {:.0}/s)",
            "events per fsync (always)", events_per_fsync, fsync_per_sec
        );
    }
    if let (Some(d), Some(a)) = (&freshness_default, &freshness_always) {
        println!("{:<28} {:>14.1} ms  (always: {:.1} ms)", "freshness p99 (default)", d.p99_ms, a.p99_ms);
    }
    if let Some(m) = &memory {
        println!("{:<28} {:>14.1} MiB (projector {:.1} MiB)", "peak RSS gateway", m.gateway_mib, m.projector_mib);
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&Value::Object(report))?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    eprintln!("figures written to {} in {:.0} s", args.json.display(), started.elapsed().as_secs_f64());
    Ok(())
}
