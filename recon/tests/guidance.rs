//! The live probe (`ScanFusion::probe`): what the phone is told about the wound while it
//! scans. Frames go through live fusion exactly as the server's reconstruction actor offers
//! them (gate, region placed by the first frame, integration), then the probe runs on the
//! volume as it stands.

use std::time::Instant;

use coherency_recon::phantom::family::{self, Case};
use coherency_recon::phantom::wound::WoundPhantom;
use coherency_recon::phantom::{presets, Phantom, PhantomScan, ScanConfig, TrajectoryOptions};
use coherency_recon::{Guidance, ScanFusion};

fn live(scan: PhantomScan) -> ScanFusion {
    let mut fusion = ScanFusion::new();
    for (i, frame) in scan.frames.into_iter().enumerate() {
        fusion.offer(i as u64 + 1, frame);
    }
    fusion
}

fn class(name: &str) -> Case {
    family::by_name(name).expect("a named class")
}

fn probe(fusion: &ScanFusion, what: &str) -> Option<Guidance> {
    let t = Instant::now();
    let g = fusion.probe();
    eprintln!("{what}: {g:?} in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    g
}

#[test]
fn a_wound_in_the_middle_of_the_frames_is_measurable() {
    for name in ["crater", "wide-flat", "lobed-steep"] {
        let case = class(name);
        let phantom = WoundPhantom::new(case.spec.clone());
        for seed in 0..2 {
            let fusion = live(phantom.scan(&ScanConfig::iphone(seed), &case.trajectory));
            assert_eq!(probe(&fusion, name), Some(Guidance::Measurable), "{name} seed {seed}");
        }
    }
}

#[test]
fn aiming_beside_the_wound_is_off_centre() {
    let case = class("crater");
    let phantom = WoundPhantom::new(case.spec.clone());
    for seed in 0..2 {
        let fusion = live(phantom.scan(&ScanConfig::iphone(seed), &TrajectoryOptions::off_centre(30.0)));
        assert_eq!(probe(&fusion, "crater 30 mm off"), Some(Guidance::OffCentre), "seed {seed}");
    }
}

#[test]
fn skin_without_a_wound_is_not_found() {
    let mut spec = presets::spherical_cap(false);
    spec.cavity = coherency_recon::phantom::CavityShape::SphericalCap { radius: 0.015, depth: 1e-5 };
    let phantom = Phantom::new(spec);
    for seed in 0..2 {
        let fusion = live(phantom.scan(&ScanConfig::iphone(seed)));
        assert_eq!(probe(&fusion, "no wound"), Some(Guidance::NotFound), "seed {seed}");
    }
}

#[test]
fn nothing_is_said_before_the_region_is_placed() {
    assert_eq!(ScanFusion::new().probe(), None);
}
