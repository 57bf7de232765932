//! Criterion benches of the tomography hot paths, named by size.
//! `cargo bench -p tonno-core` (the CLI's `tonno bench radon` prints the
//! same figures as JSON at 128^3).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tonno_core::affine::Affine;
use tonno_core::geometry::{Ball, TomoGeometry, extract_stack};
use tonno_core::radon::{Filter, backproject, plane_integrals};
use tonno_core::volume::Volume;

fn ball(n: usize) -> Volume {
    let c = (n as f64 - 1.0) / 2.0;
    Volume::from_fn([n; 3], Affine::identity(), |i, j, k| {
        let d2 = (i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - c).powi(2);
        (d2 < (0.3 * n as f64).powi(2)) as u8 as f32
    })
    .unwrap()
}

fn radon(c: &mut Criterion) {
    for (n, k) in [(64usize, 128usize), (128, 32)] {
        let v = ball(n);
        let g = Arc::new(TomoGeometry::fibonacci(Ball::covering(&v), k, n, n, 0.0).unwrap());
        let mut group = c.benchmark_group("radon");
        group.sample_size(10);

        group.throughput(Throughput::Elements((n * n * n) as u64));
        let mut stack = vec![0.0f32; n * n * n];
        group.bench_function(format!("extract_stack/n{n}"), |b| {
            b.iter(|| extract_stack(black_box(&v), &g, 3, 0.0, &mut stack))
        });

        group.throughput(Throughput::Elements((k * n * n * n) as u64));
        group.bench_function(format!("plane_integrals/n{n}_k{k}"), |b| {
            b.iter(|| plane_integrals(black_box(&v), 0, &g))
        });

        let sino = Filter::default()
            .apply(&plane_integrals(&v, 0, &g))
            .unwrap();
        group.throughput(Throughput::Elements((k * n * n * n) as u64));
        group.bench_function(format!("backproject/n{n}_k{k}"), |b| {
            b.iter(|| backproject(black_box(&sino), &v.grid(), 1.0))
        });
        group.finish();
    }
}

criterion_group!(benches, radon);
criterion_main!(benches);
