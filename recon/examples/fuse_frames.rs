//! Writes phantom frames to a dump directory, or fuses a dump and reports timing,
//! mesh size and measurements — the Rust half of the side-by-side with Open3D
//! (`recon/bench/open3d_compare.py` reads the same dump).
//!
//! ```text
//! cargo run --release -p coherency-recon --example fuse_frames -- write DIR [seed] [frames] [cap|ellipsoid|irregular] [plane|limb]
//! cargo run --release -p coherency-recon --example fuse_frames -- fuse DIR [voxel_mm] [out.ply]
//! cargo run --release -p coherency-recon --example fuse_frames -- bench DIR voxel_mm threads runs [roi|full]
//! ```
//!
//! `bench` fuses the dump `runs` times after one warm-up run and prints medians as one
//! JSON line: frames/s (with `threads` > 1, that many scans are fused concurrently, one
//! per thread, and the total rate is reported: a scan is one sequential stream), the same
//! rate from the fusing threads' CPU time (`cpu_fps`: what cores of our own would give,
//! steady while other processes load the machine), and marching-cubes time for the whole
//! wound region and incrementally after one more frame.

use std::path::PathBuf;
use std::time::Instant;

use coherency_recon::io::{read_dump, write_dump};
use coherency_recon::measure::{measure_auto, MeasureConfig};
use coherency_recon::mesh::MeshExtractor;
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuse_frames write DIR [seed] [frames] [shape] [skin] | fuse DIR [voxel_mm] [out.ply] | bench DIR voxel_mm threads runs [roi|full]";
    let (Some(cmd), Some(dir)) = (args.first(), args.get(1)) else {
        return Err(usage.into());
    };
    let dir = PathBuf::from(dir);
    match cmd.as_str() {
        "write" => {
            let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let frames = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60);
            let curved = args.get(5).is_some_and(|s| s == "limb");
            let spec = match args.get(4).map(String::as_str) {
                Some("ellipsoid") => presets::ellipsoid(curved),
                Some("irregular") => presets::irregular(curved),
                _ => presets::spherical_cap(curved),
            };
            let phantom = Phantom::new(spec);
            let mut sc = ScanConfig::iphone(seed);
            sc.frames = frames;
            let scan = phantom.scan(&sc);
            write_dump(&dir, &scan.frames, Some(scan.truth.target_world), Some(&scan.truth))?;
            println!("wrote {} frames to {}", scan.frames.len(), dir.display());
        }
        "fuse" => {
            let voxel_mm: f32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
            let dump = read_dump(&dir)?;
            let mut cfg = TsdfConfig::with_voxel_size(voxel_mm / 1000.0);
            if let Some(t) = dump.target {
                cfg.roi = Some(Aabb::around(t, 0.06));
            }
            let mut vol = TsdfVolume::new(cfg)?;
            let t0 = Instant::now();
            for f in &dump.frames {
                vol.integrate(f)?;
            }
            let fuse = t0.elapsed();
            let t1 = Instant::now();
            let mut ex = MeshExtractor::new(0.5);
            ex.update(&vol);
            let mesh = ex.mesh();
            let extract = t1.elapsed();
            println!(
                "fused {} frames in {:.1} ms ({:.0} frames/s), {} bricks, {:.1} MiB; mesh {} vertices {} triangles in {:.1} ms",
                dump.frames.len(),
                fuse.as_secs_f64() * 1e3,
                dump.frames.len() as f64 / fuse.as_secs_f64(),
                vol.brick_count(),
                vol.memory_bytes() as f64 / (1 << 20) as f64,
                mesh.positions.len(),
                mesh.triangle_count(),
                extract.as_secs_f64() * 1e3
            );
            if let Some(out) = args.get(3) {
                std::fs::write(out, mesh.to_ply())?;
            }
            if let Some(t) = dump.target {
                let m = measure_auto(&vol, t, &MeasureConfig::default())?;
                println!(
                    "area {} mm², volume {} mm³, max depth {} mm, length {} mm, width {} mm",
                    m.outline_area_mm2, m.volume_mm3, m.max_depth_mm, m.length_mm, m.width_mm
                );
            }
        }
        "bench" => {
            let voxel_mm: f32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
            let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
            let runs: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
            let roi = args.get(5).is_none_or(|s| s == "roi");
            let dump = read_dump(&dir)?;
            let mut cfg = TsdfConfig::with_voxel_size(voxel_mm / 1000.0);
            if roi {
                cfg.roi = dump.target.map(|t| Aabb::around(t, 0.06));
            }
            let fuse_once = || -> Result<(f64, TsdfVolume), coherency_recon::ReconError> {
                let mut vol = TsdfVolume::new(cfg)?;
                let c0 = thread_cpu_s();
                for f in &dump.frames {
                    vol.integrate(f)?;
                }
                Ok((thread_cpu_s() - c0, vol))
            };
            let mut fps = Vec::new();
            let mut cpu_fps = Vec::new();
            let mut mesh_full = Vec::new();
            let mut mesh_incr = Vec::new();
            for run in 0..=runs {
                let t0 = Instant::now();
                let fused: Vec<(f64, TsdfVolume)> = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..threads).map(|_| s.spawn(fuse_once)).collect();
                    hs.into_iter().map(|h| h.join().expect("fusion thread")).collect::<Result<Vec<_>, _>>()
                })?;
                let cpu: f64 = fused.iter().map(|r| r.0).sum();
                let vols: Vec<TsdfVolume> = fused.into_iter().map(|r| r.1).collect();
                let wall = t0.elapsed().as_secs_f64();
                let mut vol = vols.into_iter().next().ok_or("no volume")?;
                let t1 = Instant::now();
                let mut ex = MeshExtractor::new(0.5);
                ex.update(&vol);
                let full = t1.elapsed().as_secs_f64();
                vol.integrate(&dump.frames[dump.frames.len() / 2])?;
                let t2 = Instant::now();
                ex.update(&vol);
                let incr = t2.elapsed().as_secs_f64();
                if run > 0 {
                    fps.push((dump.frames.len() * threads) as f64 / wall);
                    if cpu > 0.0 {
                        cpu_fps.push((dump.frames.len() * threads) as f64 / cpu);
                    }
                    mesh_full.push(full * 1e3);
                    mesh_incr.push(incr * 1e3);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            println!(
                "{{\"impl\":\"coherency-recon\",\"voxel_mm\":{voxel_mm},\"threads\":{threads},\"roi\":{roi},\"frames\":{},\"fps\":{:.1},\"cpu_fps\":{:.1},\"mesh_full_ms\":{:.2},\"mesh_incremental_ms\":{:.2}}}",
                dump.frames.len(),
                median(&mut fps),
                median(&mut cpu_fps),
                median(&mut mesh_full),
                median(&mut mesh_incr)
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

/// CPU time the calling thread has used, seconds (Linux `/proc/thread-self/schedstat`; 0
/// elsewhere). Unlike wall-clock time it barely moves when other processes load the
/// machine, so `cpu_fps` is the rate one core we had to ourselves would give.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}
