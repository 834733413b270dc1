//! A ColorChecker Classic in view (issue #26), on colour phantoms through the server's
//! pipeline (`phantom::tissue::prepare`: fusion, mesh, the clinician-outline measurement;
//! 12 colour views of 512×384 per scan), with the card on the skin beside the wound
//! (`ColourPhantom::with_card`, outside the periwound ring).
//!
//! - Detection: under neutral, warm and cold light at −1, 0 and +1 EV the card is found in
//!   every view that shows it whole, never in a view that cuts a patch, and its patch centres
//!   land on the true ones (`--nocapture` prints the counts and the cost per view).
//! - Calibration: the card's gains bring the periwound skin to the phantom's true skin tone
//!   (CIEDE2000 ≤ [`MAX_SKIN_DE`], chromaticity within [`MAX_SKIN_CHROMA`]) for a light, a
//!   medium and a dark skin under every light: the card separates the skin's tone from the
//!   light, which the periwound calibration (every skin mapped to one reference tone) cannot.
//! - The card leaves the periwound calibration (the classifier's input) exactly as it is.

use std::time::Instant;

use coherency_recon::colour::{
    card_calibration, colour_vertices, default_classifier, delta_e2000, detect_checker, linear_to_lab, skin_tone,
    tissue_composition, ColourView, REFERENCE_SKIN_LINEAR,
};
use coherency_recon::phantom::colour::{CheckerCard, ColourPhantom, Illuminant, Lighting, SKIN_TONES};
use coherency_recon::phantom::tissue::{evaluation_cases, prepare_phantom, ColourCase, ColourScanConfig, Prepared};
use coherency_recon::phantom::{ScanConfig, TrajectoryOptions};
use coherency_recon::Vec3;

/// Largest CIEDE2000 between the card-calibrated periwound skin and the true skin tone (the
/// periwound calibration alone is 6–37 off on these tones).
const MAX_SKIN_DE: f64 = 6.0;
/// Largest error of the card-calibrated skin's `ln(R/G)` and `ln(B/G)`: within 2 % except the
/// darkest skin's blue under warm light at −1 EV (about 9 of 255 in sRGB, where the 8-bit
/// quantisation and the read noise bias the ratio by up to ~13 %).
const MAX_SKIN_CHROMA: f64 = 0.15;

fn lights() -> Vec<Lighting> {
    let mut out = Vec::new();
    for illuminant in [Illuminant::Neutral, Illuminant::Warm, Illuminant::Cold] {
        for ev in [-1.0, 0.0, 1.0] {
            out.push(Lighting { illuminant, ev });
        }
    }
    out
}

/// The round wound on flat skin with skin tone `tone`, and the card beside it.
fn case(tone: usize) -> (ColourCase, CheckerCard) {
    let mut c = evaluation_cases(5).into_iter().nth(tone).expect("the plane case on that tone");
    c.appearance.skin_srgb = SKIN_TONES[tone];
    let phantom = ColourPhantom::new(c.spec.clone(), c.appearance.clone());
    let card = CheckerCard::beside(&phantom.wound, 0.8 + tone as f64, 0.3 * tone as f64);
    (c, card)
}

fn prepare_with_card(tone: usize) -> (Prepared, CheckerCard) {
    let (c, card) = case(tone);
    let phantom = ColourPhantom::new(c.spec.clone(), c.appearance.clone()).with_card(card);
    (prepare_phantom(phantom, &c, &ColourScanConfig::default()).expect("the scan fuses and measures"), card)
}

/// How colour frame `i` (true pose) shows the card.
#[derive(PartialEq)]
enum InView {
    /// Every patch at least 3 px inside the image.
    Whole,
    /// Some patch reaches past the image's border.
    Cut,
    /// Every patch inside, some within 3 px of the border: neither asserted.
    Borderline,
}

fn card_in_view(p: &Prepared, card: &CheckerCard, i: usize) -> InView {
    let k = p.scan.colour_intrinsics;
    let pose = p.scan.scan.true_poses[i];
    let world = p.phantom.wound.spec().world_from_phantom;
    let patch = card.pitch_m * 0.4;
    let (w, h) = (f64::from(k.width) - 1.0, f64::from(k.height) - 1.0);
    let mut margin = f64::INFINITY;
    for n in 0..24 {
        let (x, y) = card.patch_centre(n);
        for (a, b) in [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)] {
            let q = world.transform(Vec3::new(x + a * patch, y + b * patch, 0.0));
            let Some((u, v)) = k.project(pose.inverse_transform(q)) else { return InView::Cut };
            margin = margin.min(u).min(v).min(w - u).min(h - v);
        }
    }
    match margin {
        m if m < 0.0 => InView::Cut,
        m if m < 3.0 => InView::Borderline,
        _ => InView::Whole,
    }
}

/// Where chart patch `n` appears in colour frame `i` (true pose).
fn patch_in_image(p: &Prepared, card: &CheckerCard, i: usize, n: usize) -> Option<(f64, f64)> {
    let (x, y) = card.patch_centre(n);
    let q = p.phantom.wound.spec().world_from_phantom.transform(Vec3::new(x, y, 0.0));
    p.scan.colour_intrinsics.project(p.scan.scan.true_poses[i].inverse_transform(q))
}

fn chroma(c: [f64; 3]) -> [f64; 2] {
    [(c[0] / c[1]).ln(), (c[2] / c[1]).ln()]
}

fn lab(c: [f64; 3]) -> [f64; 3] {
    linear_to_lab(c.map(|v| v as f32)).map(f64::from)
}

#[test]
fn the_card_is_found_where_it_is_whole_and_gives_the_skins_true_tone() {
    let tones = [0usize, 2, 4];
    let (mut visible, mut found, mut wrong, mut missed) = (0, 0, 0, Vec::new());
    let mut detect_ms: Vec<f64> = Vec::new();
    let mut scan_ms: Vec<f64> = Vec::new();
    let mut worst = (0.0f64, 0.0f64, String::new());
    for tone in tones {
        let (p, card) = prepare_with_card(tone);
        let truth = p.phantom.skin_linear();
        for light in lights() {
            let images = p.scan.images(&light, 3);
            for (i, image) in &images {
                let shown = card_in_view(&p, &card, *i);
                let t = Instant::now();
                let det = detect_checker(image);
                detect_ms.push(t.elapsed().as_secs_f64() * 1e3);
                visible += usize::from(shown == InView::Whole);
                match (&det, shown) {
                    (Some(d), InView::Whole) => {
                        found += 1;
                        for n in 0..24 {
                            let (u, v) = patch_in_image(&p, &card, *i, n).expect("in front of the camera");
                            let off = (d.centres[n][0] - u).hypot(d.centres[n][1] - v);
                            assert!(off < 2.0, "tone {tone} {} view {i}: patch {n} off by {off:.1} px", light.label());
                        }
                    }
                    (Some(_), InView::Cut) => wrong += 1,
                    (None, InView::Whole) => missed.push(format!("tone {tone} {} view {i}", light.label())),
                    _ => {}
                }
            }
            let views = p.views(&images);
            let t = Instant::now();
            let colours = colour_vertices(&p.mesh, &views);
            let composition =
                tissue_composition(&p.mesh, &colours, &p.wound, default_classifier(), &[]).expect("a composition");
            let card_cal = card_calibration(&views).expect("the card calibrates the scan");
            scan_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let skin = skin_tone(&composition.calibration, &card_cal.calibration).expect("a skin tone");
            let de = delta_e2000(lab(skin), lab(truth));
            let (cs, ct) = (chroma(skin), chroma(truth));
            let dc = (cs[0] - ct[0]).abs().max((cs[1] - ct[1]).abs());
            let periwound_de = delta_e2000(lab(REFERENCE_SKIN_LINEAR), lab(truth));
            println!(
                "tone {tone} {:<13} card in {:>2} views, skin ΔE00 {de:4.1} (periwound alone {periwound_de:4.1}), \
                 chroma {dc:.3}, luminance ratio {:.2}",
                light.label(),
                card_cal.views_detected,
                (0.2126 * skin[0] + 0.7152 * skin[1] + 0.0722 * skin[2])
                    / (0.2126 * truth[0] + 0.7152 * truth[1] + 0.0722 * truth[2]),
            );
            if de > worst.0 {
                worst = (de, dc, format!("tone {tone} {}", light.label()));
            }
            assert!(de <= MAX_SKIN_DE, "tone {tone} {}: skin ΔE00 {de:.1}", light.label());
            assert!(dc <= MAX_SKIN_CHROMA, "tone {tone} {}: skin chromaticity off by {dc:.3}", light.label());
        }
    }
    detect_ms.sort_by(f64::total_cmp);
    scan_ms.sort_by(f64::total_cmp);
    println!(
        "views with the card whole: {visible}, detected in {found}, missed {}; detected with a patch cut: {wrong}; \
         worst skin ΔE00 {:.1} (chroma {:.3}, {})",
        missed.len(),
        worst.0,
        worst.1,
        worst.2
    );
    println!(
        "detection per view: median {:.1} ms, max {:.1} ms; colour + tissue + card per scan: median {:.0} ms, max {:.0} ms",
        detect_ms[detect_ms.len() / 2],
        detect_ms[detect_ms.len() - 1],
        scan_ms[scan_ms.len() / 2],
        scan_ms[scan_ms.len() - 1]
    );
    assert!(visible >= 100, "the card is whole in too few views ({visible}) to test detection");
    assert_eq!(wrong, 0, "a card detected in a view that cuts one of its patches");
    assert!(missed.is_empty(), "the card missed in views that show it whole: {missed:?}");
}

#[test]
fn the_card_leaves_the_periwound_calibration_as_it_is() {
    let (c, card) = case(1);
    let (with, _) = prepare_with_card(1);
    let bare = ColourPhantom::new(c.spec.clone(), c.appearance.clone());
    let config = ColourScanConfig::default();
    let scan_config = ScanConfig { frames: config.frames, ..ScanConfig::iphone(c.seed) };
    let bare_scan = bare.scan(&scan_config, &TrajectoryOptions::default(), config.colour_every, config.colour_scale);
    let light = Lighting { illuminant: Illuminant::Warm, ev: 0.0 };
    let images_with = with.scan.images(&light, 9);
    let images_bare = bare_scan.images(&light, 9);
    let views_bare: Vec<ColourView<'_>> = images_bare
        .iter()
        .map(|(i, im)| ColourView {
            image: im,
            intrinsics: bare_scan.colour_intrinsics,
            pose: with.scan.scan.frames[*i].pose,
            depth: Some(&with.scan.scan.frames[*i]),
        })
        .collect();
    let gains = |views: &[ColourView<'_>]| {
        let colours = colour_vertices(&with.mesh, views);
        tissue_composition(&with.mesh, &colours, &with.wound, default_classifier(), &[]).expect("composition")
    };
    let a = gains(&with.views(&images_with));
    let b = gains(&views_bare);
    assert_eq!(a.calibration, b.calibration, "the periwound calibration moved with the card in view");
    assert_eq!(a.shares, b.shares, "the tissue shares moved with the card in view");
    assert!(card_calibration(&views_bare).is_none(), "a card found where there is none");
    assert!(card_calibration(&with.views(&images_with)).is_some(), "the card is not found (card at {card:?})");
}
