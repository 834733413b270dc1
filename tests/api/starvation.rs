//! A node starved of CPU (`docs/operations.md`, "CPU starvation"): busy processes at normal
//! priority, several per core, while one node streams and finishes a scan and serves
//! requests; a node whose main runtime thread stalls outright; and what a renewal does with
//! a lease that lapsed, was taken, or cannot be renewed. Requests answer within their bounds,
//! the node keeps its leases, and a finished scan completes in time.
//!
//! Timings are measured from a thread and runtime of their own (the test's own runtime is the
//! node's main runtime here), and `.config/nextest.toml` runs these tests alone.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherency::cluster::lease::{LeaseEnd, LeaseStats, Leases, LEASE_TTL, RENEW_EVERY};
use coherency::cluster::{scan_key, Claim};
use coherency::config::ServiceUrl;
use coherency::store::redis::Redis;
use coherency_protocol::client::ScanStreamClient;
use coherency_protocol::ids::ScanId;

use crate::helpers::{eventually, host_port, spawn_app, spawn_app_with, TcpProxy, TestApp};
use crate::scan_stream::{config, frame, patient_with_scan, reconstruction_doc, scan_status, stream};

/// Busy processes per core: a load of about 9 on two cores, as in the report.
const HOG_PER_CORE: usize = 4;
/// Each busy process ends by itself after this, should the test process die before its guard.
const HOG_LIFETIME: Duration = Duration::from_secs(180);
/// Longest any probed request may take: `/readyz` bounds each dependency by 1 s, a read waits
/// at most 5 s for a database connection. A hang lasts as long as the starvation instead.
const REQUEST_BOUND: Duration = Duration::from_secs(6);
/// Longest a finished 300-frame scan may stay `processing` under the hog when it is fused at
/// finish (debug build, two cores): 1 s of quiet before the finish starts, then the
/// reconstruction at normal priority (6-12 s here; 26-67 s at the fusion workers' nice 10).
const FINISH_BOUND: Duration = Duration::from_secs(20);

/// Busy processes (`sh -c 'while :; do :; done'`) at normal priority, each the leader of its
/// own process group in this test's session. Dropping the guard kills every group (also when
/// the test fails); each also ends by itself after [`HOG_LIFETIME`] (coreutils `timeout`).
struct CpuHog {
    children: Vec<Child>,
}

impl CpuHog {
    fn start(n: usize) -> Self {
        let mut hog = Self { children: Vec::with_capacity(n) };
        for _ in 0..n {
            let child = Command::new("timeout")
                .args(["-s", "KILL", &HOG_LIFETIME.as_secs().to_string(), "sh", "-c", "while :; do :; done"])
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a busy process starts");
            hog.children.push(child);
        }
        hog
    }

    /// CPU time the busy processes have had so far.
    fn cpu(&self) -> Duration {
        let groups: HashSet<i64> = self.children.iter().map(|c| i64::from(c.id())).collect();
        let mut total = Duration::ZERO;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((_, fields)) = stat.rsplit_once(')') else { continue };
            // After the command name: state, ppid, pgrp, …
            let pgrp = fields.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or(-1);
            if groups.contains(&pgrp) {
                total += schedstat(&entry.path().join("schedstat")).0;
            }
        }
        total
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.children {
            let group = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// (time on a CPU, time runnable but waiting for one) from a `schedstat` file.
fn schedstat(path: &std::path::Path) -> (Duration, Duration) {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| Duration::from_nanos(v.parse().unwrap_or(0)));
    (f.next().unwrap_or_default(), f.next().unwrap_or_default())
}

/// How long this process's threads (the node's and the test's) have run, and waited for a
/// CPU while runnable, in total (threads that ended are not counted).
fn node_cpu() -> (Duration, Duration) {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| schedstat(&t.path().join("schedstat")))
        .fold((Duration::ZERO, Duration::ZERO), |(r, w), (tr, tw)| (r + tr, w + tw))
}

/// One timed request.
#[derive(Debug)]
struct Sample {
    what: &'static str,
    at: Duration,
    took: Duration,
    status: Option<u16>,
}

/// What a [`Probe`] saw.
struct Seen {
    samples: Vec<Sample>,
    /// The scan's lease holder in Redis, read every round.
    holders: Vec<(Duration, Option<String>)>,
}

/// Requests `/readyz` and an authenticated, audited read (`GET /v1/scans/{id}`) in turn,
/// and, side by side, reads the scan's lease holder from Redis over a connection of its own,
/// each every 250 ms until stopped, from a thread and runtime of its own.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
    started: Instant,
}

impl Probe {
    fn start(app: &TestApp, token: String, scan: ScanId) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (base, redis_url) = (app.address.clone(), app.config.redis_url.expose().to_string());
        let key = app.state.stores.redis.key(&scan_key(scan.as_uuid()));
        let started = Instant::now();
        let (stop_requests, stop_reads) = (Arc::clone(&stop), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let requests = async move {
                    // Longer than any bound: a hang shows as its real length.
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                    let mut samples = Vec::new();
                    while !stop_requests.load(Ordering::Relaxed) {
                        let reads = [
                            ("readyz", client.get(format!("{base}/readyz"))),
                            ("scan", client.get(format!("{base}/v1/scans/{scan}")).bearer_auth(&token)),
                        ];
                        for (what, req) in reads {
                            let at = started.elapsed();
                            let status = req.send().await.ok().map(|r| r.status().as_u16());
                            samples.push(Sample { what, at, took: started.elapsed() - at, status });
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    samples
                };
                let holders = async move {
                    let redis = redis::Client::open(redis_url).unwrap();
                    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
                    let mut holders = Vec::new();
                    while !stop_reads.load(Ordering::Relaxed) {
                        let holder = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap_or_default();
                        holders.push((started.elapsed(), holder));
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    holders
                };
                let (samples, holders) = tokio::join!(requests, holders);
                Seen { samples, holders }
            })
        });
        Self { stop, thread: Some(thread), started }
    }

    /// Time since the probe started (the scale of its samples).
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every `kinds` request the probe made answered within [`REQUEST_BOUND`], with 200 when
/// `only_ok`.
fn assert_requests_answered(seen: &Seen, kinds: &[&str], only_ok: bool) {
    for what in kinds {
        let n = seen.samples.iter().filter(|s| s.what == *what).count();
        assert!(n >= 5, "only {n} {what} requests were made");
    }
    for s in seen.samples.iter().filter(|s| kinds.contains(&s.what)) {
        let (what, at, took, status) = (s.what, s.at, s.took, s.status);
        assert!(
            status.is_some() && (!only_ok || status == Some(200)) && took < REQUEST_BOUND,
            "{what} sent {at:?} after the probe started answered {status:?} after {took:?} (bound {REQUEST_BOUND:?})"
        );
    }
}

/// The node held the scan's lease at every read from `from` to `to` (probe time).
fn assert_held_throughout(seen: &Seen, node: &str, from: Duration, to: Duration) {
    let during: Vec<_> = seen.holders.iter().filter(|(at, _)| (from..to).contains(at)).collect();
    assert!(during.len() >= 5, "the lease was read only {} times", during.len());
    for (at, holder) in during {
        assert_eq!(holder.as_deref(), Some(node), "the scan's lease holder {at:?} after the probe started");
    }
}

/// The renewer never lost, let lapse or failed to renew a lease, and never ran late.
fn assert_leases_kept(stats: LeaseStats) {
    assert_eq!((stats.lost, stats.expired, stats.retaken, stats.failed_passes), (0, 0, 0, 0), "{stats:?}");
    assert!(stats.passes >= 3, "{stats:?}");
    assert!(Duration::from_millis(stats.max_gap_ms) < RENEW_EVERY * 2, "a renewal ran late: {stats:?}");
}

#[actix_web::test]
async fn under_a_cpu_hog_requests_answer_the_node_keeps_its_leases_and_a_finished_scan_completes_in_time() {
    // Without live fusion every frame is decoded and fused at finish: the slowest finish.
    let app = spawn_app_with(|mut c| {
        c.scan_live_fusion = false;
        c
    })
    .await;
    let (patient, scan) = patient_with_scan(&app).await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let probe = Probe::start(&app, patient.token.clone(), scan);
    let hog = CpuHog::start(cores * HOG_PER_CORE);
    let (t0, node0, hog0) = (Instant::now(), node_cpu(), hog.cpu());

    let mut phone = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    let streaming_from = probe.now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for seq in 1..=300 {
        tick.tick().await;
        phone.send_frame(frame(seq)).await.unwrap_or_else(|e| panic!("frame {seq}: {e}"));
    }
    let reconnects = phone.reconnects();
    assert_eq!(phone.finish().await.unwrap().last_seq, 300);
    let (finished, finished_at) = (Instant::now(), probe.now());
    eventually(FINISH_BOUND, "the finished scan complete under the hog", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
    let processing = finished.elapsed();
    let (window, node1, hog_cpu) = (t0.elapsed(), node_cpu(), hog.cpu() - hog0);
    let (ran, waited) = (node1.0.saturating_sub(node0.0), node1.1.saturating_sub(node0.1));
    drop(hog);
    let seen = probe.stop().await;

    // The hog really took the CPU: it ran for at least a quarter of the machine's time, and
    // the node's threads spent at least as long waiting for a CPU as running.
    let machine = window * u32::try_from(cores).unwrap();
    assert!(hog_cpu * 4 >= machine, "the hog had only {hog_cpu:?} of CPU in {window:?} on {cores} cores");
    assert!(waited >= ran, "the node waited only {waited:?} for a CPU and ran {ran:?}");
    assert_requests_answered(&seen, &["readyz", "scan"], true);
    assert_held_throughout(&seen, &app.state.node, streaming_from, finished_at);
    assert_leases_kept(app.state.cluster.leases.stats());
    assert_eq!(reconnects, 0, "the phone was never moved");
    let doc = reconstruction_doc(&app, scan).await;
    assert_eq!(doc.get_document("quality").unwrap().get_str("fusion").unwrap(), "at_finish");
    eprintln!(
        "under {n} busy processes: hog {hog_cpu:?} of CPU in {window:?}; node ran {ran:?}, waited {waited:?}; \
         complete {processing:?} after finish; slowest readyz {:?}, read {:?}; timings {:?}",
        seen.samples.iter().filter(|s| s.what == "readyz").map(|s| s.took).max(),
        seen.samples.iter().filter(|s| s.what == "scan").map(|s| s.took).max(),
        doc.get("timings_ms"),
        n = cores * HOG_PER_CORE,
    );
}

#[actix_web::test]
async fn a_node_whose_main_runtime_stalls_keeps_its_leases_and_answers_within_its_bounds() {
    let app = spawn_app_with(|c| c).await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut phone = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut phone, 1, 10).await;
    let probe = Probe::start(&app, patient.token.clone(), scan);
    eventually(Duration::from_secs(5), "the probe under way", || async {
        (probe.now() > Duration::from_millis(500)).then_some(())
    })
    .await;

    // This test's thread runs the node's main runtime (the actix system of `spawn_app`):
    // blocking it stalls everything scheduled there for twice the lease TTL.
    let stalled_from = probe.now();
    std::thread::sleep(LEASE_TTL * 2);
    let stalled_to = probe.now();

    stream(&mut phone, 11, 20).await;
    let reconnects = phone.reconnects();
    assert_eq!(phone.finish().await.unwrap().last_seq, 20);
    let seen = probe.stop().await;
    eprintln!(
        "main runtime stalled {:?}: leases {:?}; slowest readyz {:?}, read {:?}",
        stalled_to - stalled_from,
        app.state.cluster.leases.stats(),
        seen.samples.iter().filter(|s| s.what == "readyz").map(|s| (s.took, s.status)).max(),
        seen.samples.iter().filter(|s| s.what == "scan").map(|s| (s.took, s.status)).max(),
    );
    assert_held_throughout(&seen, &app.state.node, stalled_from, stalled_to);
    assert_leases_kept(app.state.cluster.leases.stats());
    // Readiness bounds each dependency (503 naming a slow one); a read can still wait for
    // the stalled thread when the pool hands it a connection that thread opened
    // (`docs/operations.md`, CPU starvation).
    assert_requests_answered(&seen, &["readyz"], false);
    assert_eq!(reconnects, 0, "the scan's session outlived the stall");
    eventually(Duration::from_secs(30), "the scan complete", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
}

/// Runs a Redis command over the test app's own connection.
async fn redis_do(app: &TestApp, cmd: &mut redis::Cmd) {
    let mut c = app.state.stores.redis.conn.clone();
    cmd.query_async::<()>(&mut c).await.unwrap();
}

#[actix_web::test]
async fn a_lapsed_lease_is_taken_back_unless_another_node_claimed_it_and_one_not_renewed_in_time_stops_its_entity() {
    let app = spawn_app().await;
    // Node A: its own leases, over a Redis connection the test can cut.
    let proxy = TcpProxy::start(host_port(&app.config.redis_url)).await;
    let mut config = app.config.clone();
    config.redis_url = ServiceUrl::new(&proxy.rewrite(&app.config.redis_url));
    let leases = Arc::new(Leases::new(Redis::connect(&config).await.unwrap(), "node-a".into()));
    leases.spawn_renewer();
    let ends: Arc<Mutex<Vec<LeaseEnd>>> = Arc::default();
    let claim = |name: &'static str| {
        let (leases, ends) = (leases.clone(), ends.clone());
        async move {
            let stopped = move |e: &LeaseEnd| ends.lock().unwrap().push(e.clone());
            leases.claim_or_stop(name, || true, stopped).await.unwrap()
        }
    };
    let key = |name: &str| app.state.stores.redis.key(name);
    let stats_reach = |what: &'static str, f: fn(LeaseStats) -> bool| {
        let leases = leases.clone();
        eventually(RENEW_EVERY * 3, what, move || {
            let ok = f(leases.stats());
            async move { ok.then_some(()) }
        })
    };

    // It lapsed (the node stalled past its TTL) and nobody claimed it since: taken back, and
    // the entity runs on.
    assert_eq!(claim("lease:test:a").await, Claim::Ours);
    redis_do(&app, redis::cmd("DEL").arg(key("lease:test:a"))).await;
    stats_reach("the lapsed lease taken back", |s| s.retaken == 1).await;
    assert_eq!(app.state.cluster.leases.owner("lease:test:a").await.unwrap().as_deref(), Some("node-a"));
    assert!(leases.holds("lease:test:a") && ends.lock().unwrap().is_empty());

    // Another node holds it: lost, the entity is stopped and told who holds it.
    redis_do(&app, redis::cmd("SET").arg(key("lease:test:a")).arg("node-b")).await;
    stats_reach("the lease lost to node B", |s| s.lost == 1).await;
    assert_eq!(ends.lock().unwrap().clone(), [LeaseEnd::Lost { holder: Some("node-b".into()) }]);
    assert!(!leases.holds("lease:test:a"));

    // It lapsed, and another node claimed it and let it go meanwhile: lost too, never taken back.
    redis_do(&app, redis::cmd("DEL").arg(key("lease:test:a"))).await;
    assert_eq!(claim("lease:test:a").await, Claim::Ours);
    redis_do(&app, redis::cmd("DEL").arg(key("lease:test:a"))).await;
    redis_do(
        &app,
        redis::cmd("SET").arg(format!("{}:claim", key("lease:test:a"))).arg("node-b-claim").arg("PX").arg(60_000),
    )
    .await;
    stats_reach("the lease lost to a claim in between", |s| s.lost == 2).await;
    assert_eq!(ends.lock().unwrap()[1], LeaseEnd::Lost { holder: None });
    assert_eq!(app.state.cluster.leases.owner("lease:test:a").await.unwrap(), None, "not taken back");

    // Redis cannot be reached: the lease stays valid until its TTL has passed since its last
    // confirmed renewal, then it has expired and the entity is stopped.
    assert_eq!(claim("lease:test:c").await, Claim::Ours);
    let passes = leases.stats().passes;
    eventually(RENEW_EVERY * 3, "a renewal of the new lease", || async {
        (leases.stats().passes > passes).then_some(())
    })
    .await;
    proxy.cut();
    let cut = Instant::now();
    eventually(LEASE_TTL + RENEW_EVERY * 2, "the unrenewed lease expired", || async {
        (leases.stats().expired == 1).then_some(())
    })
    .await;
    assert!(cut.elapsed() + RENEW_EVERY >= LEASE_TTL, "stopped {:?} after Redis went away", cut.elapsed());
    assert_eq!(ends.lock().unwrap()[2], LeaseEnd::Expired);
    assert!(!leases.holds("lease:test:c"));
}

/// The scan's status and `updated_at`.
async fn scan_row(app: &TestApp, scan: ScanId) -> (String, chrono::DateTime<chrono::Utc>) {
    let r = sqlx::query!("SELECT status, updated_at FROM scans WHERE id = $1", scan.as_uuid())
        .fetch_one(&app.pg)
        .await
        .unwrap();
    (r.status, r.updated_at)
}

#[actix_web::test]
async fn a_finished_scan_waiting_on_a_busy_node_is_kept_fresh_so_it_is_not_taken_over_as_stale() {
    let app = spawn_app_with(|mut c| {
        c.scan_finish_defer_max_ms = 3_000;
        c.scan_processing_stale_secs = 4;
        c
    })
    .await;
    let (pa, a) = patient_with_scan(&app).await;
    let (pb, b) = patient_with_scan(&app).await;
    let mut phone_b = ScanStreamClient::connect_with(config(&app, &pb, b)).await.unwrap();
    let mut phone_a = ScanStreamClient::connect_with(config(&app, &pa, a)).await.unwrap();
    stream(&mut phone_a, 1, 10).await;
    phone_a.finish().await.unwrap();
    let (status, finished) = scan_row(&app, a).await;
    assert_eq!(status, "processing");
    // B streams without a pause: A waits in the finish hook for the whole deferral, and is
    // `processing` for longer than a quarter of the stale bound.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut touched = finished;
    for seq in 1..=80 {
        tick.tick().await;
        phone_b.send_frame(frame(seq)).await.unwrap();
        let (status, at) = scan_row(&app, a).await;
        if status == "processing" {
            touched = touched.max(at);
        }
    }
    assert!(
        touched - finished >= chrono::Duration::milliseconds(900),
        "a processing scan's updated_at moved only from {finished} to {touched}"
    );
    phone_b.finish().await.unwrap();
    eventually(Duration::from_secs(30), "both scans complete", || async {
        let done = scan_status(&app, a).await == "complete" && scan_status(&app, b).await == "complete";
        done.then_some(())
    })
    .await;
}
