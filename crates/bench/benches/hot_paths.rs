//! Criterion micro-benchmarks of Relais's hot paths, on realistic events of the synthetic
//! history (`relais::synth`, the demo's generator, fixed seed).
//!
//! Groups (throughput is in events):
//! - `cloudevents_ingest`: the body of a batch of 500 CloudEvents (a JSON array, as `POST`ed
//!   to the gateway) parsed with `serde_json::from_slice` (`json_parse`), and parsed then read
//!   and validated into typed envelopes with `Envelope::from_cloud_event` (`parse_and_validate`).
//! - `stored_envelope`: over 500 envelopes, `split_for_storage` then postcard encoding
//!   (`split_and_encode`); postcard encoding of the stored form, sealed box included
//!   (`encode`); `StoredEvent::decode` (`decode`); and what the validator does to a stored
//!   message: decode, open the sealed box, decode the typed envelope (`decode_open_typed`).
//! - `personal_fields`: XChaCha20-Poly1305 sealing (`seal::seal`) and opening (`seal::open`) of
//!   the personal fields of the events of the 500 that have some.
//! - `audit_chain`: the audit hash chain (`relais_audit::chain::link`) over 5000 consecutive
//!   stored payloads with their subjects, from genesis.
//! - `replay_lines`: the NDJSON lines of a replay (`GET /v1/audit/events`) for 500 opened
//!   events with their chain fields, written member by member (`write_event_line`, what the
//!   replay does) and through a JSON tree (`event_line` serialised, the reference it equals).
//! - `caseload_projection`: `Caseload::apply` of one batch of 500 events against PostgreSQL,
//!   on a view already holding the 5000 events before them; each iteration runs in a
//!   transaction that is rolled back (begin and rollback are not timed). Needs PostgreSQL at
//!   `postgres://postgres@127.0.0.1:5432` (trust auth; `RELAIS_BENCH_POSTGRES` names another
//!   server, without a database); a fresh database is created and dropped. Without PostgreSQL
//!   the group is skipped with a message on stderr.
//!
//! Run: `cargo bench -p relais-bench --bench hot_paths` (add `-- <filter>` for one group, or
//! `-- --warm-up-time 1 --measurement-time 3` for a quick run).

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relais::synth::{self, SynthOptions};
use relais_domain::envelope::{Envelope, StoredEventV1};
use relais_domain::events::PersonalFields;
use relais_domain::seal::{self, DataKey, Sealed};
use relais_domain::{StoredEvent, reference};
use relais_eventlog::subjects;
use relais_projections::Database;
use relais_projections::caseload::Caseload;
use relais_projections::worker::{Applied, View};
use serde_json::Value;
use sqlx::Connection;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Events in a batch (the gateway's batches, the projection's batches).
const BATCH: usize = 500;
/// Stored payloads chained in the audit chain benchmark.
const CHAIN_LEN: usize = 5000;
/// Events already in the caseload view before the measured batch.
const PREFILL: usize = 5000;
/// The PostgreSQL server, without a database name, unless `RELAIS_BENCH_POSTGRES` names another.
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// One event of the history in every form the benchmarks need.
struct Event {
    /// The CloudEvent as published.
    cloud_event: Value,
    /// The typed envelope (personal fields present).
    envelope: Envelope,
    /// The client's data key id and key, when the event has personal fields.
    key: Option<(Uuid, DataKey)>,
    /// The personal fields taken out of the data.
    personal: PersonalFields,
    /// The stored form, personal fields sealed.
    stored: StoredEvent,
    /// The stored bytes (postcard).
    payload: Vec<u8>,
    /// The NATS subject it is stored on.
    subject: String,
}

struct Fixture {
    events: Vec<Event>,
    recorded_at: DateTime<Utc>,
}

const ACTOR: &str = "token:bench";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let history = synth::generate(&SynthOptions { clients: 450, ..Default::default() });
        assert!(history.len() >= PREFILL + BATCH && history.len() >= CHAIN_LEN, "history too short");
        let recorded_at = Utc::now();
        let mut keys: HashMap<(String, String), (Uuid, DataKey)> = HashMap::new();
        let events = history
            .into_iter()
            .map(|s| {
                let (envelope, _) = Envelope::from_cloud_event(s.event.clone(), recorded_at, ACTOR)
                    .expect("every synthetic event is valid");
                let (mut stored, personal) = envelope.split_for_storage();
                let key = match envelope.data.client_ref() {
                    Some(client) if !personal.is_empty() => Some(
                        keys.entry((envelope.org.to_string(), client.to_owned()))
                            .or_insert_with(|| (Uuid::new_v4(), DataKey::from_bytes(rand::random())))
                            .clone(),
                    ),
                    _ => None,
                };
                if let Some((key_id, key)) = &key {
                    stored.sealed = Some(seal::seal(key, *key_id, envelope.id, rand::random(), &personal));
                }
                let stored = StoredEvent::V1(stored);
                let payload = stored.encode();
                let subject = subjects::event_subject(&envelope.org, &envelope.subject);
                Event { cloud_event: s.event, envelope, key, personal, stored, payload, subject }
            })
            .collect();
        Fixture { events, recorded_at }
    })
}

fn elements(n: usize) -> Throughput {
    Throughput::Elements(n as u64)
}

/// 1. CloudEvents JSON parse and validation.
fn cloudevents_ingest(c: &mut Criterion) {
    let f = fixture();
    let batch = &f.events[..BATCH];
    let body = serde_json::to_vec(&Value::Array(batch.iter().map(|e| e.cloud_event.clone()).collect()))
        .expect("a batch serialises to JSON");
    let mut group = c.benchmark_group("cloudevents_ingest");
    group.throughput(elements(batch.len()));
    group.bench_function("json_parse", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).expect("the batch is JSON"))
    });
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&body)).expect("the batch is JSON");
            let Value::Array(items) = value else { panic!("the batch is a JSON array") };
            items
                .into_iter()
                .map(|item| Envelope::from_cloud_event(item, f.recorded_at, ACTOR).expect("the event is valid"))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

/// 2. postcard encoding and decoding of the stored envelope.
fn stored_envelope(c: &mut Criterion) {
    let f = fixture();
    let batch = &f.events[..BATCH];
    let mut group = c.benchmark_group("stored_envelope");
    group.throughput(elements(batch.len()));
    group.bench_function("split_and_encode", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|e| StoredEvent::V1(black_box(&e.envelope).split_for_storage().0).encode())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("encode", |b| {
        b.iter(|| batch.iter().map(|e| black_box(&e.stored).encode()).collect::<Vec<_>>())
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            batch.iter().map(|e| StoredEvent::decode(black_box(&e.payload)).expect("decodes")).collect::<Vec<_>>()
        })
    });
    group.bench_function("decode_open_typed", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|e| {
                    let stored: StoredEventV1 = StoredEvent::decode(black_box(&e.payload)).expect("decodes").into_v1();
                    let personal = match (&stored.sealed, &e.key) {
                        (Some(sealed), Some((_, key))) => Some(seal::open(key, stored.id, sealed).expect("opens")),
                        _ => None,
                    };
                    stored.open(personal).expect("a typed envelope")
                })
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

/// 3. Sealing and opening personal fields.
fn personal_fields(c: &mut Criterion) {
    let f = fixture();
    let personal: Vec<(&Event, &Uuid, &DataKey)> =
        f.events[..BATCH].iter().filter_map(|e| e.key.as_ref().map(|(id, key)| (e, id, key))).collect();
    let nonces: Vec<[u8; 24]> = personal.iter().map(|_| rand::random()).collect();
    let sealed: Vec<(Uuid, &DataKey, Sealed)> = personal
        .iter()
        .map(|(e, _, key)| {
            let StoredEvent::V1(stored) = &e.stored;
            (e.envelope.id, *key, stored.sealed.clone().expect("sealed"))
        })
        .collect();
    eprintln!("personal_fields: {} of the {BATCH} events have personal fields", personal.len());
    let mut group = c.benchmark_group("personal_fields");
    group.throughput(elements(personal.len()));
    group.bench_function("seal", |b| {
        b.iter(|| {
            personal
                .iter()
                .zip(&nonces)
                .map(|((e, key_id, key), nonce)| {
                    seal::seal(key, **key_id, e.envelope.id, *nonce, black_box(&e.personal))
                })
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("open", |b| {
        b.iter(|| {
            sealed
                .iter()
                .map(|(event_id, key, s)| seal::open(key, *event_id, black_box(s)).expect("opens"))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

/// 4. The audit hash chain over stored payloads.
fn audit_chain(c: &mut Criterion) {
    let f = fixture();
    let messages = &f.events[..CHAIN_LEN];
    let bytes: usize = messages.iter().map(|e| e.payload.len()).sum();
    eprintln!("audit_chain: {CHAIN_LEN} payloads, {bytes} bytes ({} bytes on average)", bytes / CHAIN_LEN);
    let mut group = c.benchmark_group("audit_chain");
    group.throughput(elements(messages.len()));
    group.bench_function("link", |b| {
        b.iter(|| {
            messages.iter().enumerate().fold(relais_audit::GENESIS, |prev, (i, e)| {
                relais_audit::chain::link(&prev, i as u64 + 1, black_box(&e.subject), black_box(&e.payload))
            })
        })
    });
    group.finish();
}

/// 5. The replay's NDJSON lines.
fn replay_lines(c: &mut Criterion) {
    let f = fixture();
    let batch = &f.events[..BATCH];
    let links: Vec<relais_audit::Link> = batch
        .iter()
        .enumerate()
        .scan(relais_audit::GENESIS, |prev, (i, e)| {
            *prev = relais_audit::chain::link(prev, i as u64 + 1, &e.subject, &e.payload);
            Some(*prev)
        })
        .collect();
    let admission = "v1 gateway 5Lw1pXcv2vJq0m2bS3eYk0yq2u1Y7kq4mJ6f0b8s9aQ";
    let chain = |i: usize| relais_audit::line::ChainFields {
        sequence: i as u64 + 1,
        subject: &batch[i].subject,
        payload: &batch[i].payload,
        prev: Some(if i == 0 { relais_audit::GENESIS } else { links[i - 1] }),
        link: Some(links[i]),
        admission: Some(admission),
        quarantine: None,
    };
    let mut group = c.benchmark_group("replay_lines");
    group.throughput(elements(batch.len()));
    let mut out = Vec::with_capacity(batch.len() * 1024);
    group.bench_function("direct", |b| {
        b.iter(|| {
            out.clear();
            for (i, e) in batch.iter().enumerate() {
                relais_audit::line::write_event_line(&mut out, black_box(&e.envelope), &chain(i));
            }
            out.len()
        })
    });
    group.bench_function("json_tree", |b| {
        b.iter(|| {
            out.clear();
            for (i, e) in batch.iter().enumerate() {
                let line = relais_audit::line::event_line(black_box(&e.envelope), &chain(i));
                serde_json::to_writer(&mut out, &line).expect("serialises");
                out.push(b'\n');
            }
            out.len()
        })
    });
    group.finish();
}

/// 6. One batch applied by the caseload view, in a transaction rolled back each time.
fn caseload_projection(c: &mut Criterion) {
    let f = fixture();
    let applied: Vec<Applied> = f.events[..PREFILL + BATCH]
        .iter()
        .enumerate()
        .map(|(i, e)| Applied { seq: i as u64 + 1, envelope: e.envelope.clone(), key_id: e.key.as_ref().map(|k| k.0) })
        .collect();
    let (prefill, batch) = applied.split_at(PREFILL);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    // Pooled connections go back to their pool on a task: whatever is dropped (during a panic
    // too) finds the runtime.
    let _context = rt.enter();

    let server = std::env::var("RELAIS_BENCH_POSTGRES").unwrap_or_else(|_| PG_SERVER.to_owned());
    let admin_url = format!("{server}/postgres");
    let reachable = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 5 s".to_owned()),
        }
    });
    if let Err(e) = reachable {
        eprintln!("caseload_projection: skipped, PostgreSQL is not reachable at {admin_url}: {e}");
        return;
    }

    let name = format!("relais_bench_hot_{}", Uuid::new_v4().simple());
    let url = format!("{server}/{name}");
    let _dropped_at_the_end = TempDatabase { admin_url: admin_url.clone(), name };
    let db = rt.block_on(async {
        let db = Database::connect_and_migrate(&url).await.map_err(|e| format!("migrations: {e}"))?;
        db.sync_organisations(&reference::default_organisations()).await.map_err(|e| format!("organisations: {e}"))?;
        for chunk in prefill.chunks(BATCH) {
            let mut tx = db.pool().begin().await.map_err(|e| format!("begin: {e}"))?;
            Caseload.apply(&mut tx, chunk).await.map_err(|e| format!("prefill: {e}"))?;
            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
        }
        Ok::<_, String>(db)
    });
    match db {
        Ok(db) => {
            let mut group = c.benchmark_group("caseload_projection");
            group.throughput(elements(batch.len()));
            group.sample_size(20);
            let mut conn = rt.block_on(db.pool().acquire()).expect("a connection from the pool");
            group.bench_function("apply_batch", |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            let mut tx = conn.begin().await.expect("begin a transaction");
                            let start = Instant::now();
                            Caseload.apply(&mut tx, black_box(batch)).await.expect("the caseload applies the batch");
                            timed += start.elapsed();
                            tx.rollback().await.expect("roll back");
                        }
                        timed
                    })
                })
            });
            group.finish();
            rt.block_on(async move {
                drop(conn);
                db.pool().close().await;
            });
        }
        Err(e) => eprintln!("caseload_projection: skipped, the database could not be prepared: {e}"),
    }
}

/// The benchmark's database, dropped when this goes out of scope (after a panic too).
struct TempDatabase {
    admin_url: String,
    name: String,
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // On a thread of its own, with a runtime of its own: this may run inside another runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                conn.close().await
            })
            .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("caseload_projection: could not drop the database {}: {e}", self.name),
            Err(_) => eprintln!("caseload_projection: could not drop the database {}", self.name),
        }
    }
}

criterion_group!(
    benches,
    cloudevents_ingest,
    stored_envelope,
    personal_fields,
    audit_chain,
    replay_lines,
    caseload_projection
);
criterion_main!(benches);
