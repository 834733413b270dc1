//! The `booking` scenario: a storm on one clinician's calendar. `--concurrency` patients
//! race, each in a loop, for `--slots` hot slots (the clinician's first free slots): an
//! attempt books a random hot slot outright (`POST /v1/appointments`, `confirm: true`); a
//! winner keeps it 50 ms, then cancels so the slot is contested again. Reports attempts per second, the
//! attempts' latency, how many won and how many were refused, and every double booking
//! seen: a patient winning a slot that another patient had won and not yet started to
//! cancel (a slot is marked free just before its cancel is sent, so this never reports a
//! double booking that did not happen). At the end the clinician's booked appointments
//! are listed too: with every winner cancelled, none may remain.
//!
//! With several `--target`s the attempts are dealt round-robin over the nodes in the order
//! they start (attempt `k` goes to node `k mod n`, its cancel to the same node), so the
//! nodes' calendar actors contend on one calendar; patients register round-robin too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use crate::api::{self, Staff};
use crate::stats::{Errors, Latencies, Report};
use crate::BookingArgs;

/// How long a winner keeps its slot before cancelling.
const KEEP_WON_SLOT: Duration = Duration::from_millis(50);

/// Registrations in flight at once during setup.
const SETUP_CONCURRENCY: usize = 8;

/// What one patient's loop measured.
#[derive(Default)]
struct Tally {
    attempt: Latencies,
    cancel: Latencies,
    attempts: u64,
    booked: u64,
    refused: u64,
    errors: Errors,
}

/// A small deterministic generator (xorshift): slot choices differ per patient, no
/// dependency needed.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

struct Race {
    /// Which patient holds each hot slot, as far as the patients know.
    held: std::sync::Mutex<Vec<Option<u64>>>,
    http: reqwest::Client,
    /// Every node, taken round-robin by attempt number.
    targets: Vec<String>,
    /// Attempts started so far in the whole run: the next one's number.
    next_attempt: AtomicUsize,
    clinician: uuid::Uuid,
    type_id: String,
    slots: Vec<String>,
    until: Instant,
}

async fn patient_loop(race: Arc<Race>, token: String, seed: u64) -> Tally {
    let mut t = Tally::default();
    let mut pick = Pick(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    while Instant::now() < race.until {
        let k = pick.next(race.slots.len());
        let slot = &race.slots[k];
        let body = json!({"clinician_id": race.clinician, "type_id": race.type_id, "start": slot, "confirm": true});
        let target = api::target_for(&race.targets, race.next_attempt.fetch_add(1, Ordering::Relaxed));
        let start = Instant::now();
        let res = api::call(&race.http, target, "/v1/appointments", Some(&token), &body).await;
        t.attempt.record(start.elapsed());
        t.attempts += 1;
        match res {
            Ok(v) => {
                t.booked += 1;
                let Some(id) = v["id"].as_str() else {
                    t.errors.add("bad_json");
                    continue;
                };
                {
                    let mut held = race.held.lock().unwrap_or_else(|p| p.into_inner());
                    if held[k].is_some() {
                        t.errors.add("double_booking");
                    }
                    held[k] = Some(seed);
                }
                // Keep it a moment (the others hit 409 meanwhile), then give it back.
                tokio::time::sleep(KEEP_WON_SLOT).await;
                race.held.lock().unwrap_or_else(|p| p.into_inner())[k] = None;
                let start = Instant::now();
                let path = format!("/v1/appointments/{id}/cancel");
                match api::call(&race.http, target, &path, Some(&token), &json!({"reason": "load test"})).await {
                    Ok(_) => t.cancel.record(start.elapsed()),
                    Err(e) => t.errors.add(e.code.replacen("setup_", "cancel_", 1)),
                }
            }
            Err(e) if e.code == "setup_http_409" => t.refused += 1,
            Err(e) => {
                t.errors.add(e.code.replacen("setup_", "attempt_", 1));
                // Back off a little on anything else (e.g. 429, 503) so the loop stays bounded.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    t
}

/// The clinician's appointments still booked.
async fn still_booked(http: &reqwest::Client, target: &str, staff: &Staff) -> anyhow::Result<u64> {
    let list = api::get(http, target, &format!("/v1/appointments?clinician={}", staff.user_id), &staff.token)
        .await
        .map_err(|e| e.error)?;
    let n = list["appointments"].as_array().map_or(0, |a| a.iter().filter(|x| x["status"] == "booked").count());
    Ok(n as u64)
}

pub async fn run(args: &BookingArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    let (target, http, staff) = api::start_as_clinician(common, &args.staff).await?;
    let (type_id, mut slots) = api::calendar(&http, &target, &staff, args.slots.max(1) + args.skip_slots).await?;
    slots.drain(..args.skip_slots);
    slots.truncate(args.slots.max(1));
    let tag = api::run_tag();
    let tag = tag.as_str();

    let mut errors = Errors::default();
    let mut tokens = Vec::with_capacity(args.concurrency);
    let mut registering = futures_util::stream::iter((0..args.concurrency).map(|i| {
        let (http, t) = (http.clone(), api::target_for(&common.target, i).to_owned());
        async move { api::patient(&http, &t, tag, i).await }
    }))
    .buffer_unordered(SETUP_CONCURRENCY);
    while let Some(r) = registering.next().await {
        match r {
            Ok((token, _)) => tokens.push(token),
            Err(e) => errors.add(e.code),
        }
    }
    drop(registering);
    if tokens.is_empty() {
        anyhow::bail!("no patient could be registered");
    }

    let patients = tokens.len();
    let duration = common.duration.map_or(Duration::from_secs(10), |d| d.0);
    let started = Instant::now();
    let race = Arc::new(Race {
        held: std::sync::Mutex::new(vec![None; slots.len()]),
        http: http.clone(),
        targets: common.target.clone(),
        next_attempt: AtomicUsize::new(0),
        clinician: staff.user_id,
        type_id,
        slots,
        until: started + duration,
    });
    let loops: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| tokio::spawn(patient_loop(race.clone(), token, i as u64 + 1)))
        .collect();
    let mut all = Tally::default();
    for l in loops {
        let t = l.await.unwrap_or_default();
        all.attempt.merge(&t.attempt);
        all.cancel.merge(&t.cancel);
        all.attempts += t.attempts;
        all.booked += t.booked;
        all.refused += t.refused;
        errors.merge(&t.errors);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let booked_at_end = still_booked(&http, &target, &staff).await?;
    let double = errors.0.get("double_booking").copied().unwrap_or(0);

    let mut counts = std::collections::BTreeMap::new();
    counts.insert("patients".into(), patients as f64);
    counts.insert("hot_slots".into(), race.slots.len() as f64);
    counts.insert("attempts".into(), all.attempts as f64);
    counts.insert("attempts_per_s".into(), (all.attempts as f64 / elapsed.max(1e-9)).round());
    counts.insert("booked".into(), all.booked as f64);
    counts.insert("refused_409".into(), all.refused as f64);
    counts.insert("booked_at_end".into(), booked_at_end as f64);
    counts.insert("double_bookings".into(), double as f64);
    let mut latencies = std::collections::BTreeMap::new();
    latencies.insert("attempt".into(), all.attempt.summary());
    latencies.insert("cancel".into(), all.cancel.summary());
    Ok(Report::named("booking", &common.target, 0.0, elapsed, latencies, counts, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_stay_in_range_and_spread() {
        let mut p = Pick(7);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            seen[p.next(5)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
        assert_eq!(Pick(3).next(0), 0);
    }
}
