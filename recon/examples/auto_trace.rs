//! Traces the automatic segmentation on the preset phantoms and on ad-hoc hard classes
//! built from the preset generator (steep punch on a tight limb, wide shallow lobed wound
//! on gently curved skin, small shallow, wide flat):
//! `cargo run -p coherency-recon --example auto_trace [seeds] [filter] [server]`.
//!
//! Each scan fuses every frame in a 16 cm box around the true wound centre and measures at
//! the true centre; with `server` it goes through the server's policy instead
//! (`ScanFusion::fuse_all`: quality gate, region of interest and median centre-ray target).
//! Prints the trace and the area / volume errors, or the failure code.

use coherency_recon::fusion::ScanFusion;
use coherency_recon::measure::{measure_auto_traced, MeasureConfig, View};
use coherency_recon::phantom::{presets, CavityShape, Phantom, PhantomSpec, ScanConfig, SkinShape};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};

fn case(skin: SkinShape, cavity: CavityShape) -> PhantomSpec {
    PhantomSpec { skin, cavity, orientation: 0.4, world_from_phantom: presets::default_placement() }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let only: Option<&str> = args.get(2).map(|s| s.as_str()).filter(|s| *s != "-");
    let server = args.get(3).is_some_and(|s| s == "server");
    let cyl = |r: f64| SkinShape::Cylinder { radius: r };
    let mut cases: Vec<(&str, PhantomSpec)> = presets::labelled();
    cases.extend([
        (
            "punch-forearm~",
            case(
                cyl(0.038),
                CavityShape::EllipsoidalCap { semi_major: 0.007, semi_minor: 0.007, depth: 0.003, wall: 0.02 },
            ),
        ),
        (
            "punch-wide-limb~",
            case(
                cyl(0.035),
                CavityShape::EllipsoidalCap { semi_major: 0.013, semi_minor: 0.013, depth: 0.004, wall: 0.02 },
            ),
        ),
        (
            "punch-small~",
            case(
                cyl(0.025),
                CavityShape::EllipsoidalCap { semi_major: 0.004, semi_minor: 0.004, depth: 0.002, wall: 0.02 },
            ),
        ),
        (
            "sacrum-lobed~",
            case(
                cyl(0.11),
                CavityShape::Irregular {
                    mean_radius: 0.025,
                    harmonics: vec![(3, 0.15, 0.4), (2, 0.1, 1.0)],
                    depth: 0.002,
                    wall: 0.6,
                    tilt: 0.0,
                    tilt_angle: 0.0,
                },
            ),
        ),
        (
            "wide-flat~",
            case(
                SkinShape::Plane,
                CavityShape::EllipsoidalCap { semi_major: 0.03, semi_minor: 0.03, depth: 0.003, wall: 0.3 },
            ),
        ),
        ("small-shallow~", case(SkinShape::Plane, CavityShape::SphericalCap { radius: 0.004, depth: 0.001 })),
        (
            "abrasion~",
            case(
                SkinShape::Plane,
                CavityShape::EllipsoidalCap { semi_major: 0.02, semi_minor: 0.0125, depth: 0.001, wall: 0.7 },
            ),
        ),
    ]);
    for (name, spec) in cases {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let phantom = Phantom::new(spec);
        let truth = *phantom.truth();
        let mut ok = 0;
        for seed in 0..seeds {
            let scan = phantom.scan(&ScanConfig::iphone(seed));
            let t0 = std::time::Instant::now();
            let (vol, target, views) = if server {
                let frames: Vec<_> = scan.frames.into_iter().enumerate().map(|(i, f)| (i as u64 + 1, f)).collect();
                let fused = ScanFusion::fuse_all(&frames, &mut || {})?;
                let miss = (fused.target - truth.target_world).norm() * 1e3;
                println!("  target {miss:.1} mm from the wound centre, {} fused", fused.fused);
                let views: Vec<View> =
                    fused.accepted().iter().map(|a| View { intrinsics: a.intrinsics, pose: a.pose }).collect();
                (fused.vol, fused.target, views)
            } else {
                let cfg = TsdfConfig { roi: Some(Aabb::around(truth.target_world, 0.08)), ..TsdfConfig::default() };
                let mut vol = TsdfVolume::new(cfg)?;
                for f in &scan.frames {
                    vol.integrate(f)?;
                }
                let views: Vec<View> =
                    scan.frames.iter().map(|f| View { intrinsics: f.intrinsics, pose: f.pose }).collect();
                (vol, truth.target_world, views)
            };
            let t1 = std::time::Instant::now();
            let (r, tr) = measure_auto_traced(&vol, target, &views, &MeasureConfig::default());
            let ms = t1.elapsed().as_secs_f64() * 1e3;
            let _ = t0;
            match r {
                Ok(m) => {
                    ok += 1;
                    println!(
                        "{name} s{seed}: area {:+.1} % vol {:+.1} % len {:+.2} depth {:+.2} mm  ({ms:.0} ms)",
                        (m.outline_area_mm2.value / truth.outline_area_mm2 - 1.0) * 100.0,
                        (m.volume_mm3.value / truth.volume_mm3 - 1.0) * 100.0,
                        m.length_mm.value - truth.length_mm,
                        m.max_depth_mm.value - truth.max_depth_mm,
                    );
                }
                Err(e) => println!("{name} s{seed}: FAILED {} ({e}) ({ms:.0} ms)", e.code()),
            }
            println!("  {tr:?}");
        }
        println!(
            "{name}: {ok}/{seeds} automatic  (true area {:.1} mm², depth {:.2} mm)",
            truth.outline_area_mm2, truth.max_depth_mm
        );
    }
    Ok(())
}
