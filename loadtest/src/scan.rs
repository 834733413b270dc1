//! The `scan` scenario: N phones, each with its own patient, consent and scan, streaming
//! phantom depth frames at a fixed rate over the scan stream websocket (or a WebRTC data
//! channel, `--transport datachannel`) and finishing.
//!
//! With several `--target`s phone `i` uses node `i mod n` for its setup and its stream
//! (either transport), round-robin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use coherency_protocol::client::{ClientConfig, ClientError, ScanStreamClient, Transport};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::DepthFrame;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::{Instant, MissedTickBehavior};

use crate::api::{self, Provisioned};
use crate::frames;
use crate::stats::{AckSecond, Errors, Latencies, Report, ScanFigures, MAX_TIMELINE_SECONDS};
use crate::ScanArgs;

/// Setup calls in flight at once (registration hashes a password: keep the server's CPU for
/// the run).
const SETUP_CONCURRENCY: usize = 8;

/// The code a client error is counted under.
pub fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Server(m) => m.code.clone(),
        ClientError::Rejected { status, .. } => format!("http_{status}"),
        ClientError::Closed { code, .. } => format!("close_{code}"),
        ClientError::ReconnectsExhausted { .. } => "reconnects_exhausted".into(),
        ClientError::Timeout(what) => format!("timeout_{}", what.replace(' ', "_")),
        ClientError::Connect(_) => "connect".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::AlreadyFinished(_) => "already_finished".into(),
        ClientError::Stopped => "stopped".into(),
    }
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    done: AtomicU64,
}

/// What one phone measured.
#[derive(Default)]
struct PhoneResult {
    ack: Latencies,
    /// With colour: the acks of the frames that carried it, and of the others.
    ack_colour: Latencies,
    ack_depth_only: Latencies,
    /// Ack latencies taken so far: the next one is frame `acks_taken` (0-based), since the
    /// client reports them in seq order.
    acks_taken: u64,
    send_wait: Latencies,
    sent: u64,
    acked: u64,
    reconnects: u64,
    completed: bool,
    errors: Errors,
    last_activity: Option<Instant>,
    /// Acks by second of the run in which their frame was sent (approximately: the ack's
    /// arrival is taken as when it was drained, at most 8 frames late).
    timeline: Vec<AckSecond>,
}

struct Plan {
    fps: f64,
    frames: u64,
    duration: Option<Duration>,
    window: u32,
    transport: Transport,
    /// The colour JPEG and every how many frames it goes out (0: never).
    colour: Option<Bytes>,
    colour_every: u64,
}

/// Whether the server URL names a loopback host.
fn is_loopback_target(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default();
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn drain(client: &ScanStreamClient, out: &mut PhoneResult, live: &Live, t0: Instant, colour_every: u64) {
    let now = Instant::now();
    for l in client.take_ack_latencies() {
        out.ack.record(l);
        if colour_every > 0 {
            if out.acks_taken.is_multiple_of(colour_every) {
                out.ack_colour.record(l);
            } else {
                out.ack_depth_only.record(l);
            }
        }
        out.acks_taken += 1;
        let second = (now - l).saturating_duration_since(t0).as_secs() as usize;
        if second < MAX_TIMELINE_SECONDS {
            if out.timeline.len() <= second {
                out.timeline.resize(second + 1, AckSecond::default());
            }
            out.timeline[second].add(l);
        }
    }
    let acked = client.last_ack();
    if acked > out.acked {
        live.acked.fetch_add(acked - out.acked, Ordering::Relaxed);
        out.acked = acked;
    }
}

async fn phone(
    p: Provisioned,
    ring: Arc<Vec<DepthFrame>>,
    plan: Arc<Plan>,
    start_at: Instant,
    live: Arc<Live>,
    t0: Instant,
) -> PhoneResult {
    let mut out = PhoneResult::default();
    tokio::time::sleep_until(start_at).await;
    let mut config = ClientConfig::new(p.target.clone(), p.token.clone(), ScanId::from_uuid(p.scan_id));
    config.agent = Some(concat!("coherency-loadtest/", env!("CARGO_PKG_VERSION")).into());
    config.window = plan.window;
    config.transport = plan.transport;
    // The data channel's ICE gathers loopback candidates only when the target is loopback.
    config.rtc_loopback_only = is_loopback_target(&p.target);
    config.send_timeout = Duration::from_secs(30);
    config.finish_timeout = Duration::from_secs(60);
    let mut client = match ScanStreamClient::connect_with(config).await {
        Ok(c) => c,
        Err(e) => {
            out.errors.add(error_code(&e));
            live.errors.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    let period = Duration::from_secs_f64(1.0 / plan.fps);
    let mut tick = tokio::time::interval_at(started, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let ts0 = unix_us();
    let mut failed = false;
    for i in 0..plan.frames {
        tick.tick().await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut frame = ring[(i as usize) % ring.len()].clone();
        if let Some(jpeg) = plan.colour.as_ref().filter(|_| plan.colour_every > 0 && i % plan.colour_every == 0) {
            frame = frames::with_colour(frame, jpeg);
        }
        frame.captured_at_us = ts0 + (i as f64 * 1e6 / plan.fps) as u64;
        let before = Instant::now();
        match client.send_frame(frame).await {
            Ok(_) => {
                out.send_wait.record(before.elapsed());
                out.sent += 1;
                live.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                out.errors.add(error_code(&e));
                live.errors.fetch_add(1, Ordering::Relaxed);
                failed = true;
                break;
            }
        }
        if i % 8 == 7 {
            drain(&client, &mut out, &live, t0, plan.colour_every);
        }
    }
    // Wait (bounded) for every frame's ack so its latency is recorded before `finish`
    // consumes the client.
    let wait_until = Instant::now() + Duration::from_secs(30);
    while !failed && client.last_ack() + 1 < client.next_seq() && Instant::now() < wait_until {
        drain(&client, &mut out, &live, t0, plan.colour_every);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drain(&client, &mut out, &live, t0, plan.colour_every);
    out.last_activity = Some(Instant::now());
    out.reconnects = u64::from(client.reconnects());
    if failed {
        return out;
    }
    match client.finish().await {
        Ok(f) => {
            out.completed = true;
            if f.last_seq > out.acked {
                live.acked.fetch_add(f.last_seq - out.acked, Ordering::Relaxed);
                out.acked = f.last_seq;
            }
        }
        Err(e) => {
            out.errors.add(error_code(&e));
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    out.last_activity = Some(Instant::now());
    live.done.fetch_add(1, Ordering::Relaxed);
    out
}

/// Runs the scenario and builds the report (SLOs are checked by the caller).
pub async fn run(args: &ScanArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    anyhow::ensure!(args.scans >= 1 && args.scans <= 10_000, "--scans must be 1..=10000");
    anyhow::ensure!(args.fps > 0.0 && args.fps <= 240.0, "--fps must be in (0, 240]");
    anyhow::ensure!((1..=1024).contains(&args.ring), "--ring must be 1..=1024");
    let duration = common.duration.map(|d| d.0);
    let frames = match (args.frames, duration) {
        (Some(n), _) => n,
        (None, Some(d)) => (d.as_secs_f64() * args.fps).ceil() as u64 + 1,
        (None, None) => 300,
    };
    anyhow::ensure!((1..=1_000_000).contains(&frames), "--frames must be 1..=1000000");
    let ramp = common.ramp_up.0;
    let quiet = common.quiet;
    let say = |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };

    let http = api::http_client()?;
    for t in &common.target {
        api::ready(&http, t).await?;
    }

    say(format!("rendering and encoding {} phantom frames ({})…", args.ring, args.encoding.name()));
    let (enc, conf, n) = (args.encoding, args.confidence, args.ring);
    let ring = tokio::task::spawn_blocking(move || frames::ring(n, enc, conf, 42)).await?;
    let colour = if args.colour_every > 0 {
        let (w, h) = frames::COLOUR_SIZE;
        say(format!("painting and encoding the {w}×{h} colour image…"));
        let img = tokio::task::spawn_blocking(move || frames::colour_jpeg(w, h, frames::COLOUR_BUDGET_BYTES, 42))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the colour image does not fit {} B", frames::COLOUR_BUDGET_BYTES))?;
        say(format!(
            "colour: {}×{} JPEG, {} B (quantiser step {}), on every {}th frame",
            img.width,
            img.height,
            img.jpeg.len(),
            img.q,
            args.colour_every
        ));
        Some(img.jpeg)
    } else {
        None
    };
    let frame_bytes = frames::mean_message_bytes_with_colour(&ring, colour.as_ref(), args.colour_every);
    let colour_jpeg_bytes = colour.as_ref().map_or(0, |j| j.len() as u64);
    let ring = Arc::new(ring);

    // Setup: accounts, patients, consents, scans — bounded concurrency, round-robin targets.
    say(format!("creating {} patients, consents and scans…", args.scans));
    let run_tag = api::run_tag();
    let mut errors = Errors::default();
    let mut provisioned = Vec::with_capacity(args.scans);
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut setup = tokio::task::JoinSet::new();
    for i in 0..args.scans {
        let (http, target, tag, sem) =
            (http.clone(), api::target_for(&common.target, i).to_owned(), run_tag.clone(), sem.clone());
        setup.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, api::provision(&http, &target, &tag, i).await)
        });
    }
    let mut first_setup_error = None;
    while let Some(r) = setup.join_next().await {
        match r? {
            (i, Ok(p)) => provisioned.push((i, p)),
            (_, Err(e)) => {
                errors.add(e.code.clone());
                first_setup_error.get_or_insert(e.error);
            }
        }
    }
    if provisioned.is_empty() {
        return Err(first_setup_error.unwrap_or_else(|| anyhow::anyhow!("no scan could be set up")));
    }
    if let Some(e) = &first_setup_error {
        say(format!("warning: {} of {} setups failed; first: {e:#}", args.scans - provisioned.len(), args.scans));
    }
    provisioned.sort_by_key(|(i, _)| *i);

    let transport = match args.transport {
        crate::Transport::Ws => Transport::WebSocket,
        crate::Transport::Datachannel => Transport::DataChannel,
    };
    let plan = Arc::new(Plan {
        fps: args.fps,
        frames,
        duration,
        window: args.window,
        transport,
        colour,
        colour_every: args.colour_every,
    });
    let live = Arc::new(Live::default());
    let n = provisioned.len();
    let expected = n as u64 * frames;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(expected), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} sent {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let t0 = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, (_, p)) in provisioned.into_iter().enumerate() {
        let offset = if n > 1 { ramp.mul_f64(k as f64 / (n - 1) as f64) } else { Duration::ZERO };
        tasks.spawn(phone(p, ring.clone(), plan.clone(), t0 + offset, live.clone(), t0));
    }
    // A hard bound on the whole run: ramp-up + three times the nominal stream time + 2 min.
    let nominal = duration.unwrap_or(Duration::from_secs_f64(frames as f64 / args.fps));
    let hard_deadline = t0 + ramp + nominal * 3 + Duration::from_secs(120);

    let mut results = Vec::with_capacity(n);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(Ok(res)) => results.push(res),
                Some(Err(e)) => { errors.add("task_panicked"); first_setup_error.get_or_insert(anyhow::anyhow!("{e}")); }
                None => break,
            },
            _ = ticker.tick() => {
                let (sent, acked) = (live.sent.load(Ordering::Relaxed), live.acked.load(Ordering::Relaxed));
                bar.set_position(sent);
                let el = t0.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "| acked {acked} ({:.0}/s) | done {}/{n} | errors {}",
                    acked as f64 / el, live.done.load(Ordering::Relaxed), live.errors.load(Ordering::Relaxed)
                ));
                if Instant::now() > hard_deadline {
                    tasks.abort_all();
                    errors.add("run_deadline");
                }
            }
        }
    }
    bar.finish_and_clear();

    let end = results.iter().filter_map(|r| r.last_activity).max().unwrap_or_else(Instant::now);
    let elapsed = end.saturating_duration_since(t0).as_secs_f64().max(0.001);
    let mut ack = Latencies::new();
    let (mut ack_colour, mut ack_depth_only) = (Latencies::new(), Latencies::new());
    let mut send_wait = Latencies::new();
    let (mut sent, mut acked, mut reconnects, mut completed) = (0, 0, 0, 0);
    let mut timeline: Vec<AckSecond> = Vec::new();
    for r in &results {
        if timeline.len() < r.timeline.len() {
            timeline.resize(r.timeline.len(), AckSecond::default());
        }
        for (t, s) in timeline.iter_mut().zip(&r.timeline) {
            t.merge(s);
        }
        ack.merge(&r.ack);
        ack_colour.merge(&r.ack_colour);
        ack_depth_only.merge(&r.ack_depth_only);
        send_wait.merge(&r.send_wait);
        errors.merge(&r.errors);
        sent += r.sent;
        acked += r.acked;
        reconnects += r.reconnects;
        completed += u64::from(r.completed);
    }
    let throughput = acked as f64 / elapsed;
    let figures = ScanFigures {
        scans: args.scans,
        fps: args.fps,
        encoding: args.encoding.name().into(),
        transport: match transport {
            Transport::WebSocket => "ws".into(),
            Transport::DataChannel => "datachannel".into(),
        },
        frame_message_bytes: frame_bytes,
        colour_every: args.colour_every,
        colour_jpeg_bytes,
        frames_sent: sent,
        frames_acked: acked,
        throughput_fps: (throughput * 10.0).round() / 10.0,
        offered_fps: args.scans as f64 * args.fps,
        throughput_mb_s: ((throughput * frame_bytes as f64 / 1e6) * 100.0).round() / 100.0,
        ack_latency: ack.summary(),
        ack_latency_colour: (args.colour_every > 0).then(|| ack_colour.summary()),
        ack_latency_depth_only: (args.colour_every > 0).then(|| ack_depth_only.summary()),
        send_wait: send_wait.summary(),
        scans_completed: completed,
        scans_failed: args.scans as u64 - completed,
        reconnects,
        ack_timeline: timeline,
    };
    Ok(Report {
        scenario: "scan".into(),
        targets: common.target.clone(),
        ramp_up_s: ramp.as_secs_f64(),
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        scan: Some(figures),
        latencies: Default::default(),
        counts: Default::default(),
        errors,
        slo: Vec::new(),
    })
}
