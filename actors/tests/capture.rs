//! Capture sessions driven end to end with in-memory stores: durability before ack,
//! resume, outages, takeover and protocol errors.

mod support;

use std::time::Duration;

use coherency_actors::capture::{
    CaptureConfig, CaptureError, Drain, GetSnapshot, HandOverScan, ListSessions, Outbound, SessionPhase, StopSession,
};
use coherency_actors::retry::RetryPolicy;
use coherency_actors::store::{ScanState, ScanStatus};
use coherency_protocol::scan::{close, ServerMsg};
use support::*;

async fn finish_run(h: &Harness, phone: &mut Phone) -> Conn {
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    let end = phone.run(&mut conn, true, |_, c| c.finished.is_some()).await;
    assert_eq!(end, RunEnd::Until, "errors: {:?}", conn.errors);
    assert_eq!(drain(&mut conn).await.last(), Some(&Outbound::Close(close::NORMAL)));
    conn
}

async fn wait_complete(h: &Harness) {
    let (index, scan) = (h.index.clone(), h.scan_id);
    eventually("scan complete", || {
        let index = index.clone();
        async move { index.state(scan).map(|s| s.status) == Some(ScanStatus::Complete) }
    })
    .await;
}

async fn wait_quality(h: &Harness, n: usize) {
    let (q, scan) = (h.quality.clone(), h.scan_id);
    eventually("every quality record", || {
        let q = q.clone();
        async move { q.records(scan).len() == n }
    })
    .await;
}

#[actix_rt::test]
async fn six_hundred_frames_are_acked_cumulatively_only_once_durable_and_stored_exactly_once() {
    let h = Harness::new(test_config());
    h.frames.faults.set_latency(Duration::from_millis(1));
    let frames = make_frames(600, 256, 192);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    phone.index = Some(h.index.clone());

    let conn = finish_run(&h, &mut phone).await;

    let fin = conn.finished.clone().expect("finished");
    assert_eq!((fin.frames, fin.last_seq, fin.status.as_str()), (600, 600, "processing"));
    assert_eq!(conn.acks.last(), Some(&600));
    assert!(conn.acks.windows(2).all(|w| w[0] < w[1]), "acks strictly increase");
    assert!(conn.acks.len() < 600, "acks are cumulative ({} acks)", conn.acks.len());
    assert!(conn.errors.is_empty());
    h.assert_stored_exactly(&frames);
    // Each frame went into exactly one chunk object, written once.
    assert_eq!(h.frames.puts(), h.frames.object_count() as u64);
    wait_complete(&h).await;
    assert_eq!(
        h.index.status_history(h.scan_id),
        vec![ScanStatus::Streaming, ScanStatus::Processing, ScanStatus::Complete]
    );
    wait_quality(&h, 600).await;
    assert!(h.quality.write_counts(h.scan_id).values().all(|n| *n == 1), "each frame judged once");
    let r = &h.quality.records(h.scan_id)[10];
    assert!(r.accepted && r.valid_fraction > 0.85 && r.median_depth_m.is_some());
    assert!((r.pose_jump_mm.expect("jump") - 1.0).abs() < 0.1);
}

#[actix_rt::test]
async fn twenty_random_cuts_with_resume_lose_nothing_and_duplicate_nothing() {
    let h = Harness::new(test_config());
    h.frames.faults.set_latency(Duration::from_millis(2));
    let frames = make_frames(400, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    phone.index = Some(h.index.clone());
    let mut rng = XorShift(0x5eed_cafe_f00d);
    let mut cuts: Vec<u64> = (0..20).map(|_| 1 + rng.next() % 399).collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut resumed_with_unacked = 0;
    for cut in &cuts {
        let mut conn = phone.connect(&h.registry).await.expect("attach");
        if phone.next > phone.acked + 1 {
            resumed_with_unacked += 1;
        }
        let end = phone.run(&mut conn, false, |p, _| p.highest_sent >= *cut).await;
        assert_eq!(end, RunEnd::Until, "errors: {:?}", conn.errors);
        conn.cut();
    }
    let conn = finish_run(&h, &mut phone).await;
    assert_eq!(conn.finished.map(|f| f.frames), Some(400));
    assert!(phone.all_errors.is_empty(), "{:?}", phone.all_errors);
    h.assert_stored_exactly(&frames);
    wait_quality(&h, 400).await;
    assert!(h.quality.write_counts(h.scan_id).values().all(|n| *n == 1), "no frame judged twice");
    assert!(cuts.len() >= 15);
    // Some resumes found frames received but not yet durable, which the phone kept
    // without resending.
    assert!(resumed_with_unacked > 0, "no resume hit frames in flight");
    wait_complete(&h).await;
}

#[actix_rt::test]
async fn a_restarted_session_resumes_from_the_durable_seq_in_the_index() {
    let h = Harness::new(test_config());
    let frames = make_frames(200, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    for cut in [37u64, 90, 151] {
        let mut conn = phone.connect(&h.registry).await.expect("attach");
        phone.run(&mut conn, false, |p, _| p.highest_sent >= cut).await;
        assert!(h.registry.send(StopSession { scan_id: h.scan_id }).await.expect("registry"));
        // The pump sees its socket closed with 1001 and the phone resumes.
        let end = phone.run(&mut conn, false, |_, _| false).await;
        assert!(matches!(end, RunEnd::Closed(close::GOING_AWAY) | RunEnd::Dropped), "{end:?}");
    }
    finish_run(&h, &mut phone).await;
    h.assert_stored_exactly(&frames);
    wait_complete(&h).await;
}

/// A config whose partial chunks wait (a long flush window): only a handover or a drain
/// makes the last frames durable.
fn holding_config() -> coherency_actors::CaptureConfig {
    coherency_actors::CaptureConfig { flush_window: Duration::from_secs(60), ..test_config() }
}

#[actix_rt::test]
async fn a_handover_makes_every_received_frame_durable_supersedes_the_connection_and_stops() {
    let h = Harness::new(holding_config());
    let frames = make_frames(60, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    // Frame n+1 is built (not yet sent) once frame n's reply came: 20 frames received.
    phone.run(&mut conn, false, |p, _| p.highest_sent > 20).await;
    let durable = h.registry.send(HandOverScan { scan_id: h.scan_id }).await.expect("registry");
    assert_eq!(durable, Some(20), "every frame received is durable before the session lets go");
    assert_eq!(h.index.state(h.scan_id).map(|s| s.acked_seq), Some(20));
    let end = phone.run(&mut conn, false, |_, _| false).await;
    assert_eq!(end, RunEnd::Closed(close::SUPERSEDED));
    assert_eq!(conn.errors.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(), vec!["superseded"]);
    let live = h.live.clone();
    let scan = h.scan_id;
    eventually("the session stopped", || {
        let live = live.clone();
        async move { !live.contains(scan) }
    })
    .await;
    assert_eq!(h.registry.send(HandOverScan { scan_id: h.scan_id }).await.expect("registry"), None);

    // A new session (here, or on the node that took the scan) starts from the index.
    let mut p2 = Phone::new(h.scan_id, frames.clone());
    p2.highest_sent = 20;
    p2.next = 21;
    let c2 = finish_run(&h, &mut p2).await;
    assert!(c2.errors.is_empty());
    h.assert_stored_exactly(&frames);
    wait_complete(&h).await;
}

#[actix_rt::test]
async fn draining_closes_connections_with_1001_after_making_their_frames_durable() {
    let h = Harness::new(holding_config());
    let frames = make_frames(30, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames);
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    phone.run(&mut conn, false, |p, _| p.highest_sent > 13).await;
    assert_eq!(h.registry.send(Drain).await.expect("registry"), 1);
    assert_eq!(h.index.state(h.scan_id).map(|s| s.acked_seq), Some(13));
    let end = phone.run(&mut conn, false, |_, _| false).await;
    assert_eq!(end, RunEnd::Closed(close::GOING_AWAY));
    assert!(conn.errors.is_empty(), "{:?}", conn.errors);
    let err = phone.connect(&h.registry).await.err();
    assert_eq!(err, Some(CaptureError::Draining));
}

#[actix_rt::test]
async fn an_index_outage_pauses_acks_slows_the_phone_and_then_everything_completes() {
    let (h, metrics) = Harness::with_metrics(test_config(), Default::default());
    let frames = make_frames(300, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    phone.index = Some(h.index.clone());
    let mut conn = phone.connect(&h.registry).await.expect("attach");

    phone.run(&mut conn, false, |p, _| p.acked >= 100).await;
    h.index.faults.set_down(true);
    let end = phone.run(&mut conn, false, |_, c| c.slowed).await;
    assert_eq!(end, RunEnd::Until);
    let durable = h.index.state(h.scan_id).expect("scan").acked_seq;
    let index = h.index.clone();
    eventually("several failed commits", || {
        let index = index.clone();
        async move { index.faults.injected() >= 5 }
    })
    .await;
    // While down: nothing more became durable and nothing more was acked.
    phone.run(&mut conn, false, |_, _| true).await;
    assert_eq!(h.index.state(h.scan_id).expect("scan").acked_seq, durable);
    assert!(phone.acked <= durable);
    let snap = conn.session.send(GetSnapshot).await.expect("session");
    assert!(snap.slowed && snap.backlog_frames >= 48, "{snap:?}");

    h.index.faults.set_down(false);
    let end = phone.run(&mut conn, true, |_, c| c.finished.is_some()).await;
    assert_eq!(end, RunEnd::Until, "errors: {:?}", conn.errors);
    assert!(conn.saw_slow && conn.saw_resume);
    assert!(conn.errors.is_empty());
    h.assert_stored_exactly(&frames);
    wait_complete(&h).await;

    // What /metrics would show.
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(metrics.durable_frames.load(SeqCst), 300);
    assert!(metrics.retries.load(SeqCst) >= 5);
    assert!(metrics.slowed.load(SeqCst) >= 1);
    assert!(metrics.max_backlog.load(SeqCst) >= 48);
    assert_eq!(metrics.sessions.load(SeqCst), 1);
}

#[actix_rt::test]
async fn a_frame_after_finish_is_refused_with_scan_not_streamable() {
    let h = Harness::new(test_config());
    h.index.faults.set_latency(Duration::from_millis(30));
    let phone = Phone::new(h.scan_id, make_frames(3, 32, 24));
    let mut p = Phone::new(h.scan_id, vec![]);
    let mut conn = p.connect(&h.registry).await.expect("attach");
    for seq in 1..=2 {
        phone.send_raw(&conn, seq).await.expect("frame");
    }
    conn.session
        .send(coherency_actors::capture::Finish { conn_id: conn.id, last: 2 })
        .await
        .expect("session")
        .expect("finish");
    let err = phone.send_raw(&conn, 3).await;
    assert!(matches!(err, Err(CaptureError::NotStreamable(_))), "{err:?}");
    let msgs = drain(&mut conn).await;
    assert!(msgs.iter().any(|m| matches!(m, Outbound::Msg(ServerMsg::Error(e)) if e.code == "scan_not_streamable")));
    assert_eq!(msgs.last(), Some(&Outbound::Close(4009)));
}

#[actix_rt::test]
async fn a_quality_sink_outage_does_not_hold_up_acks_and_every_record_arrives_afterwards() {
    let h = Harness::new(test_config());
    h.quality.faults.set_down(true);
    let frames = make_frames(300, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    let conn = finish_run(&h, &mut phone).await;
    assert_eq!(conn.acks.last(), Some(&300));
    assert!(h.quality.records(h.scan_id).is_empty());
    assert!(h.quality.faults.injected() > 0);

    h.quality.faults.set_down(false);
    wait_quality(&h, 300).await;
    let seqs: Vec<u64> = h.quality.records(h.scan_id).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    h.assert_stored_exactly(&frames);
}

#[actix_rt::test]
async fn a_steady_30_fps_stream_writes_its_quality_records_one_whole_bucket_at_a_time() {
    // A far longer linger than the default 2 s, so a loaded test machine that slows the
    // paced phone below 16 fps cannot cut a bucket, and a session that outlives it: only
    // the end of the stream can send the last, partial bucket in time.
    let h = Harness::new(CaptureConfig {
        quality_linger: Duration::from_secs(60),
        finished_idle_timeout: Duration::from_secs(60),
        ..test_config()
    });
    let frames = make_frames(100, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames);
    phone.pace = Some(Duration::from_millis(33));
    finish_run(&h, &mut phone).await;
    let finished = std::time::Instant::now();
    wait_quality(&h, 100).await;
    assert!(finished.elapsed() < Duration::from_secs(5), "the last bucket waited {:?}", finished.elapsed());
    // One write per storage bucket of 32 seqs (one Mongo document each); the last, partial
    // bucket goes when the stream finishes.
    let bucket = |first: u64, last: u64| (first..=last).collect::<Vec<u64>>();
    assert_eq!(h.quality.writes(), vec![bucket(1, 32), bucket(33, 64), bucket(65, 96), bucket(97, 100)]);
}

#[actix_rt::test]
async fn a_second_attach_takes_over_and_the_first_connection_is_closed_with_4001() {
    let h = Harness::new(test_config());
    let frames = make_frames(60, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    let mut first = phone.connect(&h.registry).await.expect("attach");
    phone.run(&mut first, false, |p, _| p.highest_sent >= 20).await;

    let mut second_phone = Phone::new(h.scan_id, frames.clone());
    second_phone.acked = phone.acked;
    second_phone.highest_sent = phone.highest_sent;
    let mut second = second_phone.connect(&h.registry).await.expect("takeover");

    let end = phone.run(&mut first, false, |_, _| false).await;
    assert_eq!(end, RunEnd::Closed(close::SUPERSEDED));
    assert_eq!(first.errors.last().map(|e| e.code.as_str()), Some("superseded"));
    assert_eq!(phone.send_raw(&first, 21).await, Err(CaptureError::Superseded));

    let end = second_phone.run(&mut second, true, |_, c| c.finished.is_some()).await;
    assert_eq!(end, RunEnd::Until, "{:?}", second.errors);
    h.assert_stored_exactly(&frames);
}

#[actix_rt::test]
async fn duplicates_are_dropped_silently_and_a_gap_is_an_error_closing_with_1008() {
    let h = Harness::new(test_config());
    let phone = Phone::new(h.scan_id, make_frames(10, 32, 24));
    let mut p = Phone::new(h.scan_id, vec![]);
    let mut conn = p.connect(&h.registry).await.expect("attach");
    for seq in [1, 2, 3, 2, 1, 3, 4] {
        assert_eq!(phone.send_raw(&conn, seq).await, Ok(()), "seq {seq}");
    }
    assert_eq!(phone.send_raw(&conn, 6).await, Err(CaptureError::SequenceGap { expected: 5, got: 6 }));
    let msgs = drain(&mut conn).await;
    let err = msgs
        .iter()
        .find_map(|m| match m {
            Outbound::Msg(ServerMsg::Error(e)) => Some(e.clone()),
            _ => None,
        })
        .expect("error message");
    assert_eq!((err.code.as_str(), err.seq), ("sequence_gap", Some(6)));
    assert_eq!(msgs.last(), Some(&Outbound::Close(close::POLICY)));

    // The session is unharmed: a corrected client resumes and the four frames are there.
    let session = h.session().await;
    let snap = session.send(GetSnapshot).await.expect("session");
    assert_eq!(snap.received_seq, 4);
}

#[actix_rt::test]
async fn a_hello_for_a_finished_scan_is_answered_with_finished_and_frames_after_finish_are_refused() {
    let h = Harness::new(test_config());
    let frames = make_frames(12, 32, 24);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    finish_run(&h, &mut phone).await;

    let mut again = phone.connect(&h.registry).await.expect("attach");
    let msgs = drain(&mut again).await;
    assert_eq!(msgs, vec![Outbound::Close(close::NORMAL)]);
    assert_eq!(phone.send_raw(&again, 12).await, Err(CaptureError::Superseded));

    // A new session (after the old one stopped) answers the same from the index.
    h.registry.send(StopSession { scan_id: h.scan_id }).await.expect("registry");
    let mut p2 = Phone::new(h.scan_id, frames);
    let mut c2 = p2.connect(&h.registry).await.expect("attach");
    assert_eq!(drain(&mut c2).await, vec![Outbound::Close(close::NORMAL)]);
}

#[actix_rt::test]
async fn failed_and_cancelled_scans_are_not_streamable() {
    let h = Harness::new(test_config());
    h.index.put_state(h.scan_id, ScanState { status: ScanStatus::Cancelled, acked_seq: 0 });
    let mut phone = Phone::new(h.scan_id, make_frames(1, 32, 24));
    let err = phone.connect(&h.registry).await.err();
    assert!(matches!(err, Some(CaptureError::NotStreamable(_))), "{err:?}");
}

#[actix_rt::test]
async fn transient_blob_failures_and_panicking_store_calls_are_retried_without_loss() {
    let h = Harness::new(test_config());
    let frames = make_frames(120, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    phone.index = Some(h.index.clone());
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    phone.run(&mut conn, false, |p, _| p.acked >= 30).await;
    h.frames.faults.fail_next(4);
    h.frames.faults.panic_next(2);
    h.index.faults.fail_next(3);
    let end = phone.run(&mut conn, true, |_, c| c.finished.is_some()).await;
    assert_eq!(end, RunEnd::Until, "{:?}", conn.errors);
    assert!(h.frames.faults.injected() >= 6 && h.index.faults.injected() >= 3);
    h.assert_stored_exactly(&frames);
}

#[actix_rt::test]
async fn storage_down_beyond_the_retry_budget_sends_the_phone_away_and_it_resumes_without_loss() {
    let mut config = test_config();
    config.durable_retry = RetryPolicy {
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        give_up_after: Some(Duration::from_millis(150)),
    };
    let h = Harness::new(config);
    let frames = make_frames(150, 64, 48);
    let mut phone = Phone::new(h.scan_id, frames.clone());
    phone.index = Some(h.index.clone());
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    phone.run(&mut conn, false, |p, _| p.acked >= 40).await;
    h.frames.faults.set_down(true);
    let end = phone.run(&mut conn, false, |_, _| false).await;
    assert_eq!(end, RunEnd::Closed(close::TRY_AGAIN_LATER));
    assert_eq!(conn.errors.last().map(|e| e.code.as_str()), Some("unavailable"));
    conn.cut();

    h.frames.faults.set_down(false);
    let conn = finish_run(&h, &mut phone).await;
    assert!(conn.errors.is_empty());
    h.assert_stored_exactly(&frames);
    wait_quality(&h, 150).await;
    assert!(h.quality.write_counts(h.scan_id).values().all(|n| *n == 1), "resent frames are not judged again");
}

#[actix_rt::test]
async fn progress_arrives_at_least_five_times_a_second_while_frames_flow() {
    let h = Harness::new(test_config());
    let mut phone = Phone::new(h.scan_id, make_frames(45, 64, 48));
    phone.pace = Some(Duration::from_millis(33));
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    let end = phone.run(&mut conn, true, |_, c| c.finished.is_some()).await;
    assert_eq!(end, RunEnd::Until);
    let at = &conn.progress_at;
    assert!(at.len() >= 5, "{} progress messages", at.len());
    let worst = at.windows(2).map(|w| w[1] - w[0]).max().expect("gaps");
    assert!(worst <= Duration::from_millis(250), "longest gap between progress messages {worst:?}");
}

#[actix_rt::test]
async fn idle_sessions_stop_and_the_registry_forgets_them() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(100);
    config.finished_idle_timeout = Duration::from_millis(50);
    let h = Harness::new(config);
    let mut phone = Phone::new(h.scan_id, make_frames(5, 32, 24));
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    phone.run(&mut conn, false, |p, _| p.acked == 5).await;
    let session = conn.session.clone();
    conn.cut();
    let registry = h.registry.clone();
    eventually("the registry to forget the session", || {
        let registry = registry.clone();
        async move { registry.send(ListSessions).await.map(|l| l.is_empty()).unwrap_or(false) }
    })
    .await;
    assert!(session.send(GetSnapshot).await.is_err(), "a stopped session answers with an error, not a panic");
    // Attaching again starts a fresh session that resumes from the index.
    let mut conn = phone.connect(&h.registry).await.expect("attach");
    let snap = conn.session.send(GetSnapshot).await.expect("session");
    assert_eq!((snap.phase, snap.durable_seq), (SessionPhase::Streaming, 5));
    phone.run(&mut conn, true, |_, c| c.finished.is_some()).await;
}
