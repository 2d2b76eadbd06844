//! Per-operation cost of the storage engines, to size how much of a request's
//! latency budget the local write and read take under each durability mode.
//!
//! Fsync figures are only meaningful if TMPDIR is on a real disk (not tmpfs).

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use dynabed::node::storage::{Durability, EngineKind, Storage};
use tempfile::TempDir;

const VALUE: [u8; 100] = [0x5A; 100];
const KEYSPACES: [u64; 2] = [1_000, 100_000];

#[derive(Clone, Copy)]
struct Engine {
    label: &'static str,
    kind: EngineKind,
    durability: Durability,
}

const ENGINES: [Engine; 3] = [
    Engine { label: "memory", kind: EngineKind::Memory, durability: Durability::Kernel },
    Engine { label: "fjall-kernel", kind: EngineKind::Fjall, durability: Durability::Kernel },
    Engine { label: "fjall-fsync", kind: EngineKind::Fjall, durability: Durability::Fsync },
];

/// Spreads ids over 64 partitions the way object keys are laid out.
fn key(id: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&((id % 64) as u32).to_be_bytes());
    key[4..].copy_from_slice(&id.to_be_bytes());
    key
}

/// splitmix64: cheap enough not to show up next to a memory-engine get.
struct Ids {
    state: u64,
    keyspace: u64,
}

impl Ids {
    fn new(keyspace: u64) -> Self {
        Ids { state: 0x9E37_79B9_7F4A_7C15, keyspace }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % self.keyspace
    }
}

fn open(kind: EngineKind, durability: Durability, dir: &TempDir) -> Storage {
    Storage::open(kind, dir.path(), durability).expect("open storage for bench")
}

/// Fewer, shorter samples for fsync: each op is a disk flush.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, engine: Engine) {
    match engine.durability {
        Durability::Fsync => {
            group.sample_size(10).measurement_time(Duration::from_secs(3));
        }
        Durability::Kernel => {
            group.sample_size(30).measurement_time(Duration::from_secs(2));
        }
    }
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_100B");
    group.throughput(Throughput::Elements(1)).warm_up_time(Duration::from_secs(1));
    for engine in ENGINES {
        configure(&mut group, engine);
        for keyspace in KEYSPACES {
            let dir = tempfile::tempdir().expect("bench tempdir");
            let storage = open(engine.kind, engine.durability, &dir);
            let mut ids = Ids::new(keyspace);
            group.bench_function(BenchmarkId::new(engine.label, keyspace), |b| {
                // Acked as a replica acks: once the write is durable.
                b.iter(|| {
                    storage.data.insert(&key(ids.next()), &VALUE).expect("bench insert");
                    futures::executor::block_on(storage.durable()).expect("bench sync")
                })
            });
        }
    }
    group.finish();
}

/// Prefills with Kernel durability and reopens in the engine's own mode, so
/// the fsync variant does not spend minutes on 100k flushes it doesn't measure.
fn prefilled(engine: Engine, keyspace: u64, dir: &TempDir) -> Storage {
    let storage = open(engine.kind, Durability::Kernel, dir);
    for id in 0..keyspace {
        storage.data.insert(&key(id), &VALUE).expect("bench prefill");
    }
    if engine.kind == EngineKind::Memory {
        return storage;
    }
    drop(storage);
    open(engine.kind, engine.durability, dir)
}

fn get(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_100B");
    group.throughput(Throughput::Elements(1)).warm_up_time(Duration::from_secs(1));
    group.sample_size(30).measurement_time(Duration::from_secs(2));
    for engine in ENGINES {
        for keyspace in KEYSPACES {
            let dir = tempfile::tempdir().expect("bench tempdir");
            let storage = prefilled(engine, keyspace, &dir);
            let mut ids = Ids::new(keyspace);
            group.bench_function(BenchmarkId::new(engine.label, keyspace), |b| {
                b.iter(|| black_box(storage.data.get(&key(ids.next())).expect("bench get")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, insert, get);
criterion_main!(benches);
