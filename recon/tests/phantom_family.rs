//! The phantom family (`coherency_recon::phantom`): ground truth against closed forms,
//! clean renders against the analytic rim, determinism, the small-body-part class against
//! today's whole-frame gate, and the presets kept bit-identical.

use coherency_recon::phantom::{presets, GroundTruth, Phantom, PhantomSpec, ScanConfig};

/// FNV-1a over bytes: a stable fingerprint without a dependency.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

fn truth_bytes(t: &GroundTruth) -> Vec<u8> {
    let v = [
        t.outline_area_mm2,
        t.bed_area_mm2,
        t.perimeter_mm,
        t.length_mm,
        t.width_mm,
        t.max_depth_mm,
        t.mean_depth_mm,
        t.volume_mm3,
        t.target_world.x,
        t.target_world.y,
        t.target_world.z,
        t.normal_world.x,
        t.normal_world.y,
        t.normal_world.z,
    ];
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

/// Fingerprint of a preset's truth and of every 5th frame of its 60-frame scan for seed 1
/// (depth, confidence, reported pose, true pose).
fn preset_fingerprint(spec: PhantomSpec) -> u64 {
    let p = Phantom::new(spec);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, &truth_bytes(p.truth()));
    let scan = p.scan(&ScanConfig::iphone(1));
    for (i, f) in scan.frames.iter().enumerate() {
        let pose = |h: &mut u64, q: &coherency_recon::Pose| {
            for r in q.rotation.iter().flatten().chain(q.translation.iter()) {
                fnv(h, &r.to_bits().to_le_bytes());
            }
        };
        pose(&mut h, &f.pose);
        pose(&mut h, &scan.true_poses[i]);
        if i % 5 != 0 {
            continue;
        }
        for d in &f.depth.depth {
            fnv(&mut h, &d.to_bits().to_le_bytes());
        }
        fnv(&mut h, f.depth.confidence.as_deref().unwrap_or(&[]));
    }
    h
}

#[test]
fn presets_render_bit_identical_frames() {
    let got: Vec<u64> = [false, true]
        .into_iter()
        .flat_map(|c| [presets::spherical_cap(c), presets::ellipsoid(c), presets::irregular(c)])
        .map(preset_fingerprint)
        .collect();
    let want: [u64; 6] = [
        14_310_476_963_919_060_590,
        17_261_222_624_502_250_066,
        9_219_358_395_088_492_493,
        15_714_861_944_994_900_671,
        4_730_387_656_065_341_461,
        9_127_346_360_545_691_560,
    ];
    assert_eq!(got, want, "{got:#x?}");
}
