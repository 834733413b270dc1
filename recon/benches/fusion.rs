//! Fusion and surface-extraction throughput on phantom frames (256×192, iPhone noise).
//!
//! `cargo bench -p coherency-recon --bench fusion`
//! - `integrate/1mm`, `integrate/2mm`: one frame fused into a warm volume (frames/s =
//!   1 / time), whole frame and with the 12 cm wound region of interest;
//! - `extract/incremental`: re-meshing after one more frame (only dirty bricks);
//! - `extract/whole`: meshing the whole volume from scratch.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use coherency_recon::geometry::Frame;
use coherency_recon::mesh::{extract_mesh, MeshExtractor};
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};

fn frames() -> (Vec<Frame>, coherency_recon::Vec3) {
    let phantom = Phantom::new(presets::ellipsoid(true));
    let mut sc = ScanConfig::iphone(7);
    sc.frames = 40;
    (phantom.scan(&sc).frames, phantom.truth().target_world)
}

fn warm_volume(cfg: TsdfConfig, frames: &[Frame]) -> TsdfVolume {
    let mut vol = TsdfVolume::new(cfg).expect("valid config");
    for f in frames {
        vol.integrate(f).expect("frame integrates");
    }
    vol
}

fn bench_integrate(c: &mut Criterion) {
    let (frames, target) = frames();
    let mut group = c.benchmark_group("integrate");
    for (name, voxel, roi) in [
        ("1mm", 0.001f32, None),
        ("1mm_roi", 0.001, Some(Aabb::around(target, 0.06))),
        ("2mm", 0.002, None),
        ("2mm_roi", 0.002, Some(Aabb::around(target, 0.06))),
    ] {
        let mut cfg = TsdfConfig::with_voxel_size(voxel);
        cfg.roi = roi;
        let mut vol = warm_volume(cfg, &frames);
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                vol.integrate(&frames[i]).expect("frame integrates")
            })
        });
    }
    group.finish();
}

fn bench_extract(c: &mut Criterion) {
    let (frames, target) = frames();
    let cfg = TsdfConfig { roi: Some(Aabb::around(target, 0.06)), ..TsdfConfig::default() };
    let (head, tail) = frames.split_at(frames.len() - 1);
    let vol = warm_volume(cfg, head);
    let mut group = c.benchmark_group("extract");
    group.sample_size(20);
    group.bench_function("whole", |b| b.iter(|| extract_mesh(&vol, 0.5)));
    group.bench_function("incremental", |b| {
        b.iter_batched(
            || {
                let mut v = warm_volume(cfg, head);
                let mut ex = MeshExtractor::new(0.5);
                ex.update(&v);
                v.integrate(&tail[0]).expect("frame integrates");
                (v, ex)
            },
            |(v, mut ex)| ex.update(&v),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_integrate, bench_extract);
criterion_main!(benches);
