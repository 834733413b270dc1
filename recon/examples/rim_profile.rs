//! The fused surface's mean radial depth profile across a round family wound's rim,
//! against the truth: `cargo run -p coherency-recon --example rim_profile -- CLASS SEED [clean|nojitter|tilt:A,B|voxel:MM]`.
//! Prints, per 0.1 mm of radius around the true rim, the depth below the true skin of the
//! fused surface (mean over 72 azimuths) and of the phantom, and where the fused profile
//! crosses half the wound's depth.

use coherency_recon::fusion::ScanFusion;
use coherency_recon::geometry::{Frame, Vec3};
use coherency_recon::phantom::family;
use coherency_recon::phantom::wound::WoundPhantom;
use coherency_recon::phantom::ScanConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("punch-forearm");
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let variant = args.get(3).map(String::as_str).unwrap_or("");
    let mut case = family::by_name(name).expect("a class");
    let mut cfg = ScanConfig::iphone(seed);
    for v in variant.split('+') {
        match v {
            "clean" => {
                cfg.noise.sigma_at_reference_m = 0.0;
                cfg.noise.quantisation_m = 0.0;
                cfg.noise.random_dropout = 0.0;
                cfg.noise.edge_dropout = 0.0;
                cfg.noise.pose_jitter_translation_m = 0.0;
                cfg.noise.pose_jitter_rotation_deg = 0.0;
            }
            "nojitter" => {
                cfg.noise.pose_jitter_translation_m = 0.0;
                cfg.noise.pose_jitter_rotation_deg = 0.0;
            }
            "nonoise" => {
                cfg.noise.sigma_at_reference_m = 0.0;
                cfg.noise.quantisation_m = 0.0;
            }
            t if t.starts_with("tilt:") => {
                let v: Vec<f64> = t[5..].split(',').filter_map(|x| x.parse().ok()).collect();
                let [a, b] = v[..] else { panic!("tilt:A,B in degrees") };
                case.trajectory.tilt_deg = (a, b);
            }
            _ => {}
        }
    }
    let phantom = WoundPhantom::new(case.spec.clone());
    let scan = phantom.scan(&cfg, &case.trajectory);
    let frames: Vec<(u64, Frame)> = scan.frames.iter().cloned().enumerate().map(|(i, f)| (i as u64 + 1, f)).collect();
    let fused = ScanFusion::fuse_all(&frames, &mut || {}).expect("fused");
    let body = &case.spec.body;
    let place = &case.spec.world_from_phantom;
    let depth_mm = phantom.truth().max_depth_mm;
    const AZ: usize = 72;
    println!("{}  seed {seed} {variant}: fused {} frames, depth {depth_mm:.2} mm", case.describe(), fused.fused);
    println!("  dr(mm)  fused  true  (depth below skin, mm; + is inside)");
    let mut prev: Option<(f64, f64)> = None;
    let mut crossing = None;
    let mut per_az_cross = vec![None; AZ];
    let mut prev_az = vec![None::<(f64, f64)>; AZ];
    for step in -40..=40 {
        let dr = f64::from(step) * 0.1e-3;
        let (mut sum, mut n, mut tsum) = (0.0, 0, 0.0);
        for k in 0..AZ {
            let phi = k as f64 * std::f64::consts::TAU / AZ as f64;
            let (x0, y0) = phantom.carved().outline_point(phi);
            let r0 = x0.hypot(y0);
            let (x, y) = (x0 * (r0 - dr) / r0, y0 * (r0 - dr) / r0);
            let (Some(p), Some(nrm)) = (body.skin_point(x, y), body.normal(x, y)) else { continue };
            let (pw, nw) = (place.transform(p), place.rotate(nrm));
            let origin: Vec3 = pw + nw * 0.010;
            if let Some(t) = fused.vol.raycast(origin, nw * -1.0, 0.0, 0.030) {
                let d = (t - 0.010) * 1e3;
                sum += d;
                n += 1;
                if let Some((pdr, pd)) = prev_az[k] {
                    if per_az_cross[k].is_none() && pd < depth_mm / 2.0 && d >= depth_mm / 2.0 {
                        per_az_cross[k] = Some(pdr + (dr * 1e3 - pdr) * (depth_mm / 2.0 - pd) / (d - pd));
                    }
                }
                prev_az[k] = Some((dr * 1e3, d));
            }
            tsum += phantom.depth_at(x, y) * 1e3;
        }
        let m = sum / n.max(1) as f64;
        if step % 2 == 0 {
            println!("  {:+5.1}  {:5.2}  {:5.2}  ({n})", dr * 1e3, m, tsum / AZ as f64);
        }
        if let Some((pdr, pm)) = prev {
            if crossing.is_none() && pm < depth_mm / 2.0 && m >= depth_mm / 2.0 {
                crossing = Some(pdr + (dr * 1e3 - pdr) * (depth_mm / 2.0 - pm) / (m - pm));
            }
        }
        prev = Some((dr * 1e3, m));
    }
    let c: Vec<f64> = per_az_cross.iter().flatten().copied().collect();
    let mean = c.iter().sum::<f64>() / c.len().max(1) as f64;
    let sd = (c.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c.len().max(1) as f64).sqrt();
    println!(
        "  half-depth crossing of the mean profile: {:+.3} mm (negative: outside the true rim); per azimuth mean {mean:+.3} sd {sd:.3} ({} of {AZ})",
        crossing.unwrap_or(f64::NAN),
        c.len()
    );
}
