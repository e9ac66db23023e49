//! A smoke run of the benchmark at a tiny size, so that it keeps working. It checks the shape
//! of the figures, not their values: performance is judged by the full run, not by tests.

use std::process::Command;

#[test]
fn the_benchmark_runs_at_a_tiny_size_and_writes_its_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_relais-bench"))
        .args(["--events", "400", "--reps", "1", "--freshness-secs", "1", "--freshness-rate", "200", "--json"])
        .arg(&json)
        .output()
        .expect("relais-bench runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("figures written")).expect("figures are JSON");
    let pairs = figures["pairs"].as_array().expect("pairs");
    for name in ["ingest", "rebuild", "replay"] {
        let pair = pairs.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("the {name} pair"));
        for key in ["relais", "limit", "ratio"] {
            assert!(pair[key].as_f64().is_some_and(|v| v > 0.0), "{name}.{key}: {pair}");
        }
    }
    assert!(figures["events_per_fsync"].as_f64().is_some_and(|v| v > 0.0));
    assert!(figures["freshness_p99_ms"].as_f64().is_some_and(|v| v > 0.0));
    assert!(figures["peak_rss_mib"]["gateway"].as_f64().is_some_and(|v| v > 0.0));
    assert!(figures["peak_rss_mib"]["projector"].as_f64().is_some_and(|v| v > 0.0));
    // The freshness run's work: WAL was written and CPU used, and the processes of Relais are
    // told apart (a second's run may leave one under the clock tick of CPU accounting).
    let work = &figures["freshness"]["server_default"]["work"];
    assert!(work["wal_records_per_event"].as_f64().is_some_and(|v| v > 0.0), "{work}");
    assert!(work["cpu_busy_secs"].as_f64().is_some_and(|v| v > 0.0), "{work}");
    for process in ["gateway", "projector"] {
        assert!(work["cpu_us_per_event_by_process"][process].as_f64().is_some(), "{process}: {work}");
    }
    // The replay pair counts the CPU of each side: the gateway on Relais' side, the
    // benchmark's own consumer on the bare side.
    let replay = pairs.iter().find(|p| p["name"] == "replay").expect("the replay pair");
    let cpu = &replay["cpu_us_per_event_by_process"];
    assert!(cpu["relais"]["gateway"].as_f64().is_some(), "{cpu}");
    assert!(cpu["limit"].as_object().is_some_and(|o| !o.is_empty()), "{cpu}");
    // The rebuild pair reports the time each side took for the same rows beside its ratio, and
    // the rebuild process's peak memory.
    // The replay pair reports each side's longest wait for the next bytes (a stall shows there).
    let replay = pairs.iter().find(|p| p["name"] == "replay").expect("the replay pair");
    for key in ["relais_longest_gap_ms", "limit_longest_gap_ms"] {
        assert!(replay[key].as_f64().is_some_and(|v| v > 0.0), "replay.{key}: {replay}");
    }
    let rebuild = pairs.iter().find(|p| p["name"] == "rebuild").expect("the rebuild pair");
    for key in ["rows_per_event", "relais_seconds", "limit_seconds", "time_ratio", "rebuild_peak_rss_mib"] {
        assert!(rebuild[key].as_f64().is_some_and(|v| v > 0.0), "rebuild.{key}: {rebuild}");
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("rebuild time ratio"), "{table}");
    assert!(table.contains("ingest (always)"), "{table}");
}
