//! The reconstruction actor and its finish step over in-memory stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{encode_client, ClientMsg, DepthFrame};
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::{Frame, Guidance, QualityGate};
use sha2::{Digest, Sha256};

use super::*;
use crate::retry::RetryPolicy;
use crate::store::{
    process_finished, ChunkSpec, FinishHook, FinishedScan, FrameCommit, FrameRow, FrameStore, QualitySink, ScanIndex,
    ScanStatus,
};
use crate::testing::{MemFrameReader, MemFrameStore, MemQualitySink, MemReconstructionSink, MemScanIndex};

fn wire(seq: u64, f: &Frame) -> DepthFrame {
    super::to_wire_frame(seq, seq * 16_667, f)
}

fn frames(n: usize) -> Vec<DepthFrame> {
    let rendered = Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig::iphone(1));
    rendered.frames.iter().take(n).enumerate().map(|(i, f)| wire(i as u64 + 1, f)).collect()
}

/// Waits (bounded) until the actor has processed `n` frames.
async fn processed(live: &LiveScan, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.fuse_lag().count() < n {
        assert!(Instant::now() < deadline, "frame {n} not fused");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn live_fusion_admits_scans_up_to_its_cap_and_frees_a_place_when_one_ends() {
    let pool = ReconstructionPool::new(1, 0);
    let first = pool.start_live(true, 1).expect("a place under the cap");
    let shared = first.clone();
    assert!(pool.start_live(true, 1).is_none(), "a second scan passed the cap");
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pool.start_live(true, 1).is_none(), "a handle still alive freed its place");
    drop(shared);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.live_scans() > 0 {
        assert!(Instant::now() < deadline, "an ended scan kept its place");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(pool.start_live(true, 1).is_some(), "an ended scan kept its place");
}

#[actix_rt::test]
async fn frames_pushed_no_faster_than_the_actor_fuses_give_a_complete_volume() {
    let pool = ReconstructionPool::new(1, 0);
    let live = pool.start_live(true, usize::MAX).expect("live");
    let mut last_coverage = 0.0;
    for f in frames(20) {
        let seq = f.seq;
        if seq == 20 {
            // Coverage is recomputed at most every COVERAGE_EVERY.
            tokio::time::sleep(live::COVERAGE_EVERY + Duration::from_millis(10)).await;
        }
        assert!(live.push(f));
        processed(&live, seq).await;
        last_coverage = live.progress().coverage;
    }
    assert!(live.progress().frames_fused >= 18, "{:?}", live.progress());
    assert!(last_coverage > 0.0);
    let r = live.take().await.expect("a result");
    assert!(r.complete && r.skipped_load == 0 && r.last_seq == 20);
    assert!(live.take().await.is_none(), "the volume is handed out once");
}

#[actix_rt::test]
async fn the_probe_tells_a_wound_in_view_from_skin_without_one() {
    let mut flat = presets::spherical_cap(false);
    flat.cavity = coherency_recon::phantom::CavityShape::SphericalCap { radius: 0.015, depth: 1e-5 };
    for (spec, want) in [(presets::spherical_cap(false), Guidance::Measurable), (flat, Guidance::NotFound)] {
        let rendered = Phantom::new(spec).scan(&ScanConfig { frames: 40, ..ScanConfig::iphone(2) });
        let pool = ReconstructionPool::new(1, 0);
        let live = pool.start_live(true, usize::MAX).expect("live");
        for (i, f) in rendered.frames.iter().enumerate() {
            let seq = i as u64 + 1;
            assert!(live.push(wire(seq, f)));
            processed(&live, seq).await;
        }
        let p = live.settle().await.expect("settles");
        assert_eq!(p.guidance, Some(want), "{p:?}");
        let told = p.warnings.contains(&coherency_protocol::scan::warning::WOUND_NOT_FOUND);
        assert_eq!(told, want == Guidance::NotFound, "{p:?}");
    }
}

#[actix_rt::test]
async fn a_burst_beyond_the_mailbox_is_skipped_and_marks_the_volume_incomplete() {
    let pool = ReconstructionPool::new(1, 0);
    let live = pool.start_live(true, usize::MAX).expect("live");
    // The test's thread is not the actor's: the burst lands faster than it is fused.
    let pushed = frames(60).into_iter().filter(|f| live.push(f.clone())).count();
    let r = live.take().await.expect("a result");
    assert_eq!(r.skipped_load as usize, 60 - pushed);
    assert!(r.skipped_load > 0, "60 frames at once fit a mailbox of {QUEUE_CAP}");
    assert!(!r.complete);
    assert!(live.progress().frames_fused <= pushed as u64);
}

#[actix_rt::test]
async fn live_fusion_keeps_exactly_the_frames_the_gate_keeps_on_the_stored_sequence() {
    // A slow orbit (the accuracy arc over 600 frames): many frames barely move.
    let rendered =
        Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig { frames: 600, ..ScanConfig::iphone(1) });
    let wires: Vec<DepthFrame> =
        rendered.frames.iter().take(90).enumerate().map(|(i, f)| wire(i as u64 + 1, f)).collect();
    // Decoding rounds depth to 0.1 mm, so the finish step sees the decoded frames.
    let stored: Vec<Frame> = wires.iter().map(|w| to_recon_frame(w).expect("decodes")).collect();
    let expected: Vec<u64> =
        QualityGate::default().accepted_indices(&stored).into_iter().map(|i| i as u64 + 1).collect();
    assert!(expected.len() < 60, "most frames are redundant: {} of 90 kept", expected.len());
    let pool = ReconstructionPool::new(1, 0);
    let live = pool.start_live(true, usize::MAX).expect("live");
    for w in wires {
        let seq = w.seq;
        assert!(live.push(w));
        processed(&live, seq).await;
    }
    assert!(live.progress().warnings.is_empty(), "holding still is not a problem to report: {:?}", live.progress());
    let r = live.take().await.expect("a result");
    assert!(r.complete);
    let rejected: Vec<u64> = r.fusion.rejected().iter().map(|(s, _)| *s).collect();
    let kept: Vec<u64> = (1..=90).filter(|s| !rejected.contains(s)).collect();
    assert_eq!(kept, expected);
    assert_eq!(r.fusion.fused() as usize, expected.len());
    assert!(r.fusion.rejected().iter().all(|(_, code)| *code == "redundant"), "{:?}", r.fusion.rejected());
}

#[actix_rt::test]
async fn a_session_that_starts_mid_scan_never_claims_a_complete_volume() {
    let pool = ReconstructionPool::new(1, 0);
    let live = pool.start_live(false, usize::MAX).expect("live");
    for f in frames(3) {
        live.push(f);
    }
    let r = live.take().await.expect("a result");
    assert!(!r.complete);
}

/// The stores a capture session would have written, and a reconstructor over them.
struct Node {
    index: Arc<MemScanIndex>,
    blobs: Arc<MemFrameStore>,
    quality: Arc<MemQualitySink>,
    reader: Arc<MemFrameReader>,
    sink: Arc<MemReconstructionSink>,
    recon: Reconstructor,
}

impl Node {
    fn new() -> Self {
        let (index, blobs, quality) = (
            Arc::new(MemScanIndex::default()),
            Arc::new(MemFrameStore::default()),
            Arc::new(MemQualitySink::default()),
        );
        let reader = Arc::new(MemFrameReader::new(index.clone(), blobs.clone(), quality.clone()));
        let sink = Arc::new(MemReconstructionSink::default());
        let recon = Reconstructor::new(
            ReconstructionPool::new(1, 0),
            reader.clone(),
            sink.clone(),
            quality.clone(),
            index.clone(),
        )
        .with_quality_recheck(Duration::from_millis(5));
        Self { index, blobs, quality, reader, sink, recon }
    }

    /// Stores `frames` as one chunk, indexes them and their quality records, and leaves the
    /// scan `processing`, as a finished stream does.
    async fn store(&self, scan_id: ScanId, frames: &[DepthFrame]) {
        self.index.create_scan(scan_id);
        let mut bytes = Vec::new();
        let mut rows = Vec::new();
        for f in frames {
            let msg = encode_client(&ClientMsg::Frame(Box::new(f.clone())));
            rows.push(FrameRow {
                seq: f.seq,
                offset: bytes.len() as u64,
                length: msg.len() as u64,
                sha256: Sha256::digest(&msg).into(),
                captured_at_us: f.captured_at_us,
            });
            bytes.extend_from_slice(&msg);
        }
        let last = frames.last().map_or(0, |f| f.seq);
        let spec = ChunkSpec { scan_id, first_seq: 1, last_seq: last };
        let chunk = self.blobs.put_chunk(&spec, Bytes::from(bytes), None).await.expect("chunk");
        let commit = FrameCommit { scan_id, chunk, frames: rows, acked_seq: last };
        self.index.commit_frames(&commit).await.expect("commit");
        let mut stats = crate::stats::CaptureStats::default();
        let records: Vec<_> =
            frames.iter().map(|f| crate::store::QualityRecord::of(scan_id, f, &stats.observe_frame(f))).collect();
        self.quality.write_quality(&records).await.expect("quality");
        self.index.set_status(scan_id, ScanStatus::Processing).await.expect("processing");
    }

    async fn finish(&self, scan_id: ScanId, last_seq: u64, live: Option<LiveScan>) -> ScanStatus {
        let scan = FinishedScan { live, scan_id, last_seq, quality_dropped: 0 };
        let retry = RetryPolicy {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            give_up_after: Some(Duration::from_secs(1)),
        };
        process_finished(Arc::new(self.recon.clone()), self.index.clone(), &retry, scan).await
    }

    fn doc_field(&self, scan_id: ScanId, path: &[&str]) -> serde_json::Value {
        let (doc, _) = self.sink.document(scan_id).expect("a reconstruction document");
        let mut v = serde_json::Value::Object(doc.body);
        for p in path {
            v = v[*p].clone();
        }
        v
    }
}

#[actix_rt::test]
async fn a_scan_fused_live_is_measured_from_its_live_volume_and_written_once() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let sent = frames(40);
    node.store(scan_id, &sent).await;
    let live = node.recon.pool().start_live(true, usize::MAX).expect("live");
    for f in &sent {
        assert!(live.push(f.clone()));
        processed(&live, f.seq).await;
    }
    assert_eq!(node.finish(scan_id, 40, Some(live.clone())).await, ScanStatus::Complete);
    assert_eq!(node.reader.faults.calls(), 0, "no stored frame was read");
    let m = node.sink.measurements(scan_id);
    assert_eq!(m.len(), 1, "one automatic measurement");
    assert_eq!((m[0].measurement.method, m[0].writes), (MeasureMethod::Auto, 1));
    assert!(m[0].measurement.figures.outline_area_mm2.value > 0.0);
    let mesh = m[0].measurement.mesh.as_ref().expect("the mesh is referenced");
    assert!(node.sink.mesh(&mesh.glb_key).is_some_and(|b| !b.is_empty()));
    assert_eq!(node.sink.document(scan_id).map(|(_, n)| n), Some(1));
    let (outcome, writes) = node.sink.reconstruction(scan_id).expect("the outcome is stored");
    assert!(matches!(outcome.outcome, ReconOutcome::Measured { keyframe: Some(_) }), "{:?}", outcome.outcome);
    assert_eq!((&outcome.mesh, writes), (mesh, 1));
    assert_eq!(node.doc_field(scan_id, &["outcome"]), "measured");
    assert_eq!(node.doc_field(scan_id, &["quality", "fusion"]), "live");
    assert_eq!(node.index.status_history(scan_id).last(), Some(&ScanStatus::Complete));
    // The actor stopped with its result stored: finishing again is an error, not a panic.
    let again = FinishedScan { live: Some(live), scan_id, last_seq: 40, quality_dropped: 0 };
    assert!(node.recon.on_finish(again).await.is_err());
}

#[actix_rt::test]
async fn a_scan_live_fusion_missed_frames_of_is_fused_from_the_stored_frames() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let sent = frames(40);
    node.store(scan_id, &sent).await;
    // This node's session saw the stream only from frame 11 on (a restart).
    let live = node.recon.pool().start_live(false, usize::MAX).expect("live");
    for f in &sent[10..] {
        live.push(f.clone());
    }
    assert_eq!(node.finish(scan_id, 40, Some(live)).await, ScanStatus::Complete);
    assert!(node.reader.faults.calls() > 0, "the stored frames were read");
    assert_eq!(node.doc_field(scan_id, &["quality", "fusion"]), "at_finish");
    assert_eq!(node.doc_field(scan_id, &["inputs", "frames_stored"]), 40);
    assert_eq!(node.sink.measurements(scan_id).len(), 1);
    // A re-run (a scan taken over) replaces the automatic measurement, never adds one.
    assert_eq!(node.finish(scan_id, 40, None).await, ScanStatus::Complete);
    let m = node.sink.measurements(scan_id);
    assert_eq!((m.len(), m[0].writes), (1, 2));
}

#[actix_rt::test]
async fn a_scan_with_no_usable_frame_fails_and_says_why() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let rendered = Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig::iphone(1));
    let blank: Vec<DepthFrame> = rendered
        .frames
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, f)| {
            let mut f = f.clone();
            f.depth.depth.iter_mut().for_each(|d| *d = 0.0);
            wire(i as u64 + 1, &f)
        })
        .collect();
    node.store(scan_id, &blank).await;
    assert_eq!(node.finish(scan_id, 10, None).await, ScanStatus::Failed);
    assert_eq!(node.doc_field(scan_id, &["status"]), "failed");
    assert!(node.sink.measurements(scan_id).is_empty());
    assert_eq!(node.index.status_history(scan_id).last(), Some(&ScanStatus::Failed));
}

#[actix_rt::test]
async fn a_result_that_cannot_be_stored_fails_the_scan() {
    let node = Node::new();
    let scan_id = ScanId::new();
    node.store(scan_id, &frames(30)).await;
    node.sink.faults.set_down(true);
    assert_eq!(node.finish(scan_id, 30, None).await, ScanStatus::Failed);
    assert_eq!(node.index.status_history(scan_id).last(), Some(&ScanStatus::Failed));
    // Once the store is back, the scan converges when it is finished again (a takeover).
    node.sink.faults.set_down(false);
    node.index.leave_stale(scan_id);
    let retry =
        RetryPolicy { initial: Duration::from_millis(1), max_delay: Duration::from_millis(5), give_up_after: None };
    assert_eq!(node.recon.recover_stale(Duration::from_secs(60), &retry).await, 1);
    assert_eq!(node.index.status_history(scan_id).last(), Some(&ScanStatus::Complete));
    assert_eq!(node.sink.measurements(scan_id).len(), 1);
}

#[actix_rt::test]
async fn lost_quality_records_are_rebuilt_from_the_stored_frames() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let sent = frames(20);
    node.store(scan_id, &sent[..10]).await;
    // Frames 11..=20 are durable, their quality records were lost.
    let (mut bytes, mut rows) = (Vec::new(), Vec::new());
    for f in &sent[10..] {
        let msg = encode_client(&ClientMsg::Frame(Box::new(f.clone())));
        rows.push(FrameRow {
            seq: f.seq,
            offset: bytes.len() as u64,
            length: msg.len() as u64,
            sha256: Sha256::digest(&msg).into(),
            captured_at_us: f.captured_at_us,
        });
        bytes.extend_from_slice(&msg);
    }
    let spec = ChunkSpec { scan_id, first_seq: 11, last_seq: 20 };
    let chunk = node.blobs.put_chunk(&spec, Bytes::from(bytes), None).await.expect("chunk");
    node.index.commit_frames(&FrameCommit { scan_id, chunk, frames: rows, acked_seq: 20 }).await.expect("commit");
    assert_eq!(node.finish(scan_id, 20, None).await, ScanStatus::Complete);
    assert_eq!(node.quality.records(scan_id).len(), 20);
    assert_eq!(node.doc_field(scan_id, &["inputs", "quality_rebuilt"]), 10);
}

#[actix_rt::test]
async fn a_polygon_remeasure_is_checked_against_its_keyframe_and_stored_beside_the_automatic_one() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let sent = frames(40);
    node.store(scan_id, &sent).await;
    assert_eq!(node.finish(scan_id, 40, None).await, ScanStatus::Complete);
    let clinician = uuid::Uuid::now_v7();
    let req = |keyframe_seq: u64, polygon: Vec<[f64; 2]>| RemeasureRequest {
        scan_id,
        keyframe_seq,
        polygon,
        created_by: clinician,
        budget: None,
        mode: RemeasureMode::Store,
    };
    let square = |c: f64, r: f64| vec![[c - r, 96.0 - r], [c + r, 96.0 - r], [c + r, 96.0 + r], [c - r, 96.0 + r]];
    assert!(matches!(node.recon.remeasure(req(999, square(128.0, 20.0))).await, Err(RemeasureError::NoKeyframe)));
    let outside = vec![[0.0, 0.0], [5000.0, 0.0], [0.0, 10.0]];
    assert!(matches!(node.recon.remeasure(req(20, outside)).await, Err(RemeasureError::Outline(_))));
    // A preview stores nothing; storing the same outline then stores exactly what it showed.
    let preview = RemeasureRequest { mode: RemeasureMode::Preview, ..req(20, square(128.0, 20.0)) };
    let shown = node.recon.remeasure(preview).await.expect("previewed");
    assert_eq!(shown.id, None);
    assert_eq!(node.sink.measurements(scan_id).len(), 1, "a preview is not stored");
    let stored = node.recon.remeasure(req(20, square(128.0, 20.0))).await.expect("measured");
    assert_eq!(stored.measurement, shown.measurement);
    let id = stored.id.expect("stored");
    let m = node.sink.measurements(scan_id);
    assert_eq!(m.len(), 2);
    assert_eq!(m.iter().find(|x| x.id == id).map(|x| &x.measurement), Some(&shown.measurement));
    let polygon = m.iter().find(|x| x.id == id).expect("stored");
    assert_eq!((polygon.measurement.method, polygon.measurement.keyframe_seq), (MeasureMethod::Polygon, Some(20)));
    assert_eq!(polygon.measurement.mesh, m.iter().find(|x| x.id != id).and_then(|x| x.measurement.mesh.clone()));
}

/// A phantom whose "wound" is a cap 10 µm deep: nothing an automatic segmentation can find.
fn flat_wound() -> Phantom {
    let mut spec = presets::spherical_cap(false);
    spec.cavity = coherency_recon::phantom::CavityShape::SphericalCap { radius: 0.015, depth: 1e-5 };
    Phantom::new(spec)
}

#[actix_rt::test]
async fn a_scan_with_nothing_to_find_completes_needing_an_outline_on_a_keyframe_that_shows_the_wound() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let phantom = flat_wound();
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let sent: Vec<DepthFrame> =
        rendered.frames.iter().take(40).enumerate().map(|(i, f)| wire(i as u64 + 1, f)).collect();
    node.store(scan_id, &sent).await;
    assert_eq!(node.finish(scan_id, 40, None).await, ScanStatus::Complete);
    assert!(node.sink.measurements(scan_id).is_empty(), "no automatic measurement");
    let (stored, writes) = node.sink.reconstruction(scan_id).expect("the outcome is stored");
    assert_eq!(writes, 1);
    let ReconOutcome::NeedsOutline { reason, keyframe } = stored.outcome.clone() else {
        panic!("needs an outline: {:?}", stored.outcome)
    };
    assert_eq!(reason.code, "no_depression", "{reason:?}");
    assert!(!reason.message.is_empty());
    assert!(node.sink.mesh(&stored.mesh.glb_key).is_some_and(|b| !b.is_empty()), "the mesh is stored");
    assert_eq!(node.doc_field(scan_id, &["outcome"]), "needs_outline");
    assert_eq!(node.doc_field(scan_id, &["reason_code"]), "no_depression");

    // The suggested frame is one that was sent, with its camera as sent, and the whole true
    // outline projects inside its image.
    let key = keyframe.expect("a keyframe is suggested");
    let sent_frame = sent.iter().find(|f| f.seq == key.seq).expect("a frame that was sent");
    assert_eq!((key.width, key.height), (sent_frame.width, sent_frame.height));
    assert_eq!(key.k, sent_frame.intrinsics.map(f64::from));
    assert_eq!(key.pose, sent_frame.pose.map(f64::from));
    let at = (key.seq - 1) as usize;
    let outline = phantom.outline_in_image(&rendered.frames[at].intrinsics, &rendered.frames[at].pose, 32);
    assert_eq!(outline.len(), 32, "the outline is in front of the camera");
    for [u, v] in &outline {
        assert!(
            (0.0..=f64::from(key.width - 1)).contains(u) && (0.0..=f64::from(key.height - 1)).contains(v),
            "outline point ({u}, {v}) outside keyframe {}",
            key.seq
        );
    }

    // Finishing again (a scan taken over) converges on the same single outcome.
    assert_eq!(node.finish(scan_id, 40, None).await, ScanStatus::Complete);
    let (again, writes) = node.sink.reconstruction(scan_id).expect("the outcome is stored");
    assert_eq!((again, writes), (stored.clone(), 2));
    assert!(node.sink.measurements(scan_id).is_empty());

    // The clinician's outline on that keyframe refers to the scan's mesh.
    let polygon = phantom.outline_in_image(&rendered.frames[at].intrinsics, &rendered.frames[at].pose, 48);
    let req = RemeasureRequest {
        scan_id,
        keyframe_seq: key.seq,
        polygon,
        created_by: uuid::Uuid::now_v7(),
        budget: None,
        mode: RemeasureMode::Store,
    };
    let id = node.recon.remeasure(req).await.expect("the outline is measured").id.expect("stored");
    let m = node.sink.measurements(scan_id);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].id, m[0].measurement.mesh.as_ref()), (id, Some(&stored.mesh)));
}

#[test]
fn failures_map_to_stable_reason_codes() {
    use coherency_recon::{measure::WoundNotFound, ReconError};
    for (e, code) in [
        (ReconError::WoundNotFound(WoundNotFound::NoDepression), "no_depression"),
        (ReconError::WoundNotFound(WoundNotFound::ExceedsScanRegion), "wound_exceeds_scan_region"),
        (ReconError::WoundNotFound(WoundNotFound::RimNotSeen), "rim_not_seen"),
        (ReconError::NotEnoughData("no fused surface near the target".into()), "not_enough_surface"),
        (
            ReconError::SegmentationFailed("the outline does not lie on the reconstructed surface".into()),
            "measurement_failed",
        ),
        (ReconError::InvalidConfig("x".into()), "measurement_failed"),
    ] {
        assert_eq!(finish::failure_reason(&e).code, code, "{e}");
    }
    let long = ReconError::SegmentationFailed("x".repeat(2000));
    assert_eq!(finish::failure_reason(&long).message.chars().count(), 500);
}

/// A colour phantom's scan as the phone sends it (24 depth frames, a JPEG colour frame at
/// twice the depth resolution on every other one, warm light), with a ColorChecker on the
/// skin beside the wound when `card`; and the wound's true outline on frame 13.
fn colour_scan(card: bool) -> (Vec<DepthFrame>, Vec<[f64; 2]>) {
    use coherency_recon::phantom::colour::{CheckerCard, ColourPhantom, Illuminant, Lighting};
    use coherency_recon::phantom::tissue::evaluation_cases;
    use coherency_recon::phantom::TrajectoryOptions;
    let case = evaluation_cases(1).remove(0);
    let mut phantom = ColourPhantom::new(case.spec.clone(), case.appearance.clone());
    if card {
        let beside = CheckerCard::beside(&phantom.wound, 0.8, 0.0);
        phantom = phantom.with_card(beside);
    }
    let config = ScanConfig { frames: 24, ..ScanConfig::iphone(case.seed) };
    let scan = phantom.scan(&config, &TrajectoryOptions::default(), 2, 2.0);
    let images = scan.images(&Lighting { illuminant: Illuminant::Warm, ev: 0.0 }, 1);
    let outline = phantom.wound.outline_in_image(&scan.scan.frames[12].intrinsics, &scan.scan.true_poses[12], 48);
    let frames = scan
        .scan
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut w = wire(i as u64 + 1, f);
            if let Some((_, im)) = images.iter().find(|(k, _)| *k == i) {
                let (width, height) =
                    (u16::try_from(im.width).expect("width"), u16::try_from(im.height).expect("height"));
                w.colour_jpeg = coherency_report::jpeg_encode::encode_rgb(&im.data, width, height, 2).map(Bytes::from);
            }
            w
        })
        .collect();
    (frames, outline)
}

/// The stored automatic measurement's tissue calibration and the reconstruction document's
/// `colour.card`.
async fn finished_calibration(card: bool) -> (CalibrationFigures, serde_json::Value) {
    let node = Node::new();
    let scan_id = ScanId::new();
    let (sent, _) = colour_scan(card);
    node.store(scan_id, &sent).await;
    assert_eq!(node.finish(scan_id, sent.len() as u64, None).await, ScanStatus::Complete);
    let m = node.sink.measurements(scan_id);
    let tissue = &m.first().expect("an automatic measurement").measurement.tissue;
    let TissueOutcome::Composition(t) = tissue else { panic!("no tissue composition: {tissue:?}") };
    (t.calibration.clone(), node.doc_field(scan_id, &["colour", "card"]))
}

#[actix_rt::test]
async fn a_scan_with_a_colour_checker_in_view_reports_it_beside_the_periwound_gains() {
    let (with, card_doc) = finished_calibration(true).await;
    let (without, no_card_doc) = finished_calibration(false).await;
    assert_eq!(with.source, "colour_checker");
    assert_eq!(without.source, "periwound");
    assert!(no_card_doc.is_null(), "{no_card_doc}");
    assert!(card_doc["views_detected"].as_u64().is_some_and(|n| n >= 1), "{card_doc}");
    // The classifier's inputs are the same with and without the card (up to the JPEG blocks
    // that hold both the card and skin near the ring).
    let periwound = with.periwound_gains.expect("the periwound gains beside the card's");
    for (a, b) in periwound.iter().zip(without.gains) {
        assert!((a / b - 1.0).abs() < 1e-3, "{periwound:?} vs {:?}", without.gains);
    }
    assert_eq!(without.periwound_gains, None);
    // Under the warm light the card's gains lift blue over red; its skin tone is the
    // phantom's lightest tone (sRGB 233 196 172) within a few units.
    assert!(with.gains[2] > 2.0 * with.gains[0], "{:?}", with.gains);
    let skin = with.skin_srgb.expect("the skin's tone");
    for (got, want) in skin.iter().zip([233u8, 196, 172]) {
        assert!((i32::from(*got) - i32::from(want)).abs() <= 25, "skin {skin:?}");
    }
}

/// The tissue calibration a polygon remeasure (a preview) of the scan reports.
async fn remeasured_calibration(node: &Node, scan_id: ScanId, outline: &[[f64; 2]]) -> CalibrationFigures {
    let req = RemeasureRequest {
        scan_id,
        keyframe_seq: 13,
        polygon: outline.to_vec(),
        created_by: uuid::Uuid::now_v7(),
        budget: None,
        mode: RemeasureMode::Preview,
    };
    let shown = node.recon.remeasure(req).await.expect("the outline is measured");
    let TissueOutcome::Composition(t) = shown.measurement.tissue else { panic!("no tissue composition") };
    t.calibration
}

#[actix_rt::test]
async fn a_remeasure_reports_the_card_calibration_the_finish_recorded() {
    let node = Node::new();
    let scan_id = ScanId::new();
    let (sent, outline) = colour_scan(true);
    node.store(scan_id, &sent).await;
    assert_eq!(node.finish(scan_id, sent.len() as u64, None).await, ScanStatus::Complete);
    let card = node.doc_field(scan_id, &["colour", "card"]);
    assert!(card["samples"].as_u64().is_some_and(|n| n >= 4), "{card}");
    let finished = &node.sink.measurements(scan_id)[0].measurement.tissue;
    let TissueOutcome::Composition(finished) = finished else { panic!("no tissue at the finish") };
    let again = remeasured_calibration(&node, scan_id, &outline).await;
    assert_eq!(again.source, "colour_checker");
    assert_eq!((again.gains, again.samples), (finished.calibration.gains, finished.calibration.samples));
    assert!(again.skin_srgb.is_some() && again.periwound_gains.is_some(), "{again:?}");

    // The remeasure reads the record (it does not detect the card again): a record of other
    // gains is what it reports, and a record of no card gives the periwound calibration.
    let (mut doc, _) = node.sink.document(scan_id).expect("a document");
    doc.body["colour"]["card"]["gains"] = serde_json::json!([1.5, 1.25, 2.0]);
    node.sink.write_document(scan_id, doc.clone()).await.expect("written");
    assert_eq!(remeasured_calibration(&node, scan_id, &outline).await.gains, [1.5, 1.25, 2.0]);
    doc.body["colour"]["card"] = serde_json::Value::Null;
    node.sink.write_document(scan_id, doc).await.expect("written");
    let without = remeasured_calibration(&node, scan_id, &outline).await;
    assert_eq!((without.source.as_str(), without.periwound_gains), ("periwound", None));
}

#[test]
fn a_recorded_card_is_read_back_from_the_reconstruction_document() {
    let body = |v: serde_json::Value| v.as_object().cloned().expect("an object");
    let of = |v| RecordedCard::of_document(&body(v));
    assert_eq!(of(serde_json::json!({})), RecordedCard::NotRecorded);
    assert_eq!(of(serde_json::json!({"colour": {"frames": {}}})), RecordedCard::NotRecorded);
    assert_eq!(of(serde_json::json!({"colour": {"card": null}})), RecordedCard::Absent);
    assert_eq!(
        of(serde_json::json!({"colour": {"card": {"gains": [1.0, 2.0, 3.0], "samples": 6}}})),
        RecordedCard::Seen { gains: [1.0, 2.0, 3.0], samples: 6 }
    );
    // Malformed gains: detected again rather than trusted.
    for bad in [serde_json::json!([1.0, 2.0]), serde_json::json!([1.0, -2.0, 3.0]), serde_json::json!("x")] {
        assert_eq!(of(serde_json::json!({"colour": {"card": {"gains": bad}}})), RecordedCard::NotRecorded);
    }
}
