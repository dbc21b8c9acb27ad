//! Micro-benchmarks of the per-request work that is not I/O: parsing the
//! request, validating a record, encoding the reply.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate_core::{AgentRecord, Reply, Request};

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.bench_function("id", |b| {
        b.iter(|| Request::parse(black_box(b"id:00012345")).unwrap())
    });
    g.bench_function("ipv4", |b| {
        b.iter(|| Request::parse(black_box(b"ip:192.168.100.200")).unwrap())
    });
    g.bench_function("ipv6", |b| {
        b.iter(|| Request::parse(black_box(b"ip:2001:db8:85a3::8a2e:370:7334")).unwrap())
    });
    g.bench_function("bad", |b| {
        b.iter(|| Request::parse(black_box(b"id:001' OR '1'='1")).unwrap_err())
    });
    g.finish();
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.bench_function("host", |b| {
        b.iter(|| {
            AgentRecord::parse(
                black_box("00012345"),
                black_box("web-server-01.example"),
                black_box("192.168.100.200"),
                black_box(KEY),
            )
            .unwrap()
        })
    });
    g.bench_function("cidr", |b| {
        b.iter(|| {
            AgentRecord::parse(
                black_box("00012345"),
                black_box("lab"),
                black_box("10.20.0.0/16"),
                black_box(KEY),
            )
            .unwrap()
        })
    });
    let rec = AgentRecord::parse("00012345", "lab", "10.20.0.0/16", KEY).unwrap();
    let q = Request::parse(b"ip:10.20.1.2").unwrap();
    g.bench_function("check_matches", |b| {
        b.iter(|| black_box(&rec).check_matches(black_box(&q)).unwrap())
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let found = Reply::Found(
        AgentRecord::parse("00012345", "web-server-01.example", "192.168.100.200", KEY).unwrap(),
    );
    g.bench_function("found", |b| b.iter(|| black_box(&found).encode()));
    let nf = Reply::not_found();
    g.bench_function("not_found", |b| b.iter(|| black_box(&nf).encode()));
    g.finish();
}

criterion_group!(benches, parse, validate, encode);
criterion_main!(benches);
