//! Criterion micro-benchmarks of the per-packet work, without the kernel:
//! `cargo bench --bench packet_path`.
//!
//! - `respond`: parse a 48-byte request and build the reply (proto only);
//! - `responder_handle`: the whole user-space path of one datagram in a worker:
//!   restrict lookup, reply rules, two clock reads, counters and the latency
//!   histogram, for a client no rule limits;
//! - `responder_handle_limited`: the same for clients under `restrict default kod
//!   limited`, within their rate (the token-bucket update added);
//! - `seqlock_read`: the state snapshot a worker takes per batch;
//! - `ratelimit_check`: one token-bucket update in a 1M-entry table.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tachyon::config::Config;
use tachyon::proto::{
    parse_client_request, respond, Access, LeapIndicator, NtpTimestamp, SystemInfo,
};
use tachyon::server::access::ratelimit::RateLimiter;
use tachyon::server::access::restrict::RestrictTable;
use tachyon::server::access::{AccessControl, SharedAccess};
use tachyon::server::responder::Responder;
use tachyon::server::stats::WorkerStats;
use tachyon::state::{shared_state, ServerState};

fn request() -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0] = 0x23;
    r[2] = 6;
    r[40..48].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
    r
}

fn synced() -> SystemInfo {
    SystemInfo {
        leap: LeapIndicator::NoWarning,
        stratum: 2,
        precision: -24,
        root_delay: 0.01,
        root_dispersion: 0.001,
        reference_id: [192, 0, 2, 1],
        reference_time: NtpTimestamp::from_unix(1_800_000_000, 0),
    }
}

fn benches(c: &mut Criterion) {
    let req = request();
    let system = synced();
    let rx = NtpTimestamp::from_unix(1_800_000_010, 5);
    let mut group = c.benchmark_group("packet_path");
    group.throughput(Throughput::Elements(1));

    let mut out = [0u8; 64];
    group.bench_function("respond", |b| {
        b.iter(|| {
            let parsed = parse_client_request(black_box(&req), false);
            black_box(parsed.map(|parsed| respond(&parsed, rx, &system, Access::Serve, &mut out)))
        })
    });

    let limited = Config::parse(
        "restrict default kod limited nomodify notrap nopeer noquery\n",
        "bench.conf",
    )
    .expect("config");
    let mut state = ServerState::unsynchronized(-24);
    state.system = system;
    let (_publisher, reader) = shared_state(state);
    let peers: Vec<SocketAddr> = (0..4096u32)
        .map(|i| SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 40000)))
        .collect();
    let mut i = 0usize;
    for (name, rules) in [
        ("responder_handle", Vec::new()),
        ("responder_handle_limited", limited.restrict.clone()),
    ] {
        let access = AccessControl {
            restrict: Arc::new(RestrictTable::new(&rules)),
            limiter: Arc::new(RateLimiter::new(limited.ratelimit)),
        };
        let mut responder = Responder::new(
            reader.clone(),
            SharedAccess::new(access),
            Arc::new(WorkerStats::default()),
        );
        responder.begin_batch();
        // 4096 clients in turn, 1 ms apart: each asks every 4 s, within its rate.
        let mut now = tachyon::clock::system_unix_ns();
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                now += 1_000_000;
                let reply = responder.handle(black_box(&req), peers[i], Some(now), &mut out);
                // The transmit timestamp, as a worker writes it before sending.
                if let Some(reply) = &reply {
                    let tx_ns = tachyon::clock::system_unix_ns();
                    responder.stamp_transmit(&mut out, reply, tx_ns);
                }
                black_box(reply)
            })
        });
    }

    group.bench_function("seqlock_read", |b| b.iter(|| black_box(reader.read())));

    let limiter = RateLimiter::new(limited.ratelimit);
    let mut t = tachyon::clock::system_unix_ns();
    group.bench_function("ratelimit_check", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            t += 1_000;
            black_box(limiter.check(peers[i].ip(), t, true))
        })
    });
    group.finish();
}

criterion_group!(packet_path, benches);
criterion_main!(packet_path);
