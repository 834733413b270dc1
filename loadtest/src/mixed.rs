//! The `mixed` scenario: a small part of every other scenario at once against the same
//! node(s) — phones streaming scans, two-person video rooms, live boards watching a
//! clinician's calendar, and a booking storm on that calendar — with one combined report.
//! The scan part's figures keep their own names (so `ack_p99_ms` works); every other
//! latency, count and error gets its scenario as a prefix (`consult_signalling`,
//! `dashboard_delivery`, `booking_attempt`, `consult_loss_pct`, `booking_http_…`). A part
//! that cannot run at all is counted as the error `<scenario>_failed` and the others go on.
//! The booking storm leaves the clinician's first 8 free slots to the dashboard part. The
//! clinician and the administrator sign in once, up front, and the parts share their tokens
//! (a TOTP code is accepted once: three parts signing in at the same moment would wait for
//! the next codes).
//!
//! Every part gets all the `--target`s and spreads its own work over them as it does when
//! run alone (phones, rooms, boards, changes and booking attempts round-robin).

use std::collections::BTreeMap;

use crate::stats::{Errors, Report};
use crate::{
    booking, consult, dashboard, scan, AdminArgs, BookingArgs, Common, ConsultArgs, DashboardArgs, DurationArg,
    MixedArgs, ScanArgs, StaffArgs,
};

/// Free slots the booking part skips: the dashboard part books its first 4, and may hold
/// some already when the storm reads the calendar.
const BOOKING_SKIPS_SLOTS: usize = 8;

/// Usage checks before anything runs.
pub fn check(args: &MixedArgs) -> Result<(), String> {
    if args.scans + args.rooms + args.boards + args.bookers == 0 {
        return Err("mixed: every part is 0; give --scans, --rooms, --boards or --bookers".into());
    }
    if args.rooms > 0 {
        consult::check_media(args.rooms, args.video_kbps, 30.0)?;
    }
    Ok(())
}

fn part_common(c: &Common) -> Common {
    Common {
        target: c.target.clone(),
        ramp_up: c.ramp_up,
        duration: c.duration,
        slo: Vec::new(),
        json: None,
        quiet: true,
    }
}

fn staff(token: &Option<String>) -> StaffArgs {
    StaffArgs { staff_email: None, staff_password: None, staff_totp: None, staff_token: token.clone() }
}

fn admin(token: &Option<String>) -> AdminArgs {
    AdminArgs { admin_email: None, admin_password: None, admin_totp: None, admin_token: token.clone() }
}

/// Signs in once for all the parts: the clinician's and the administrator's tokens (each
/// `None` when no part needs it).
async fn sign_in_once(args: &MixedArgs) -> anyhow::Result<(Option<String>, Option<String>)> {
    let c = &args.common;
    let target = c.target.first().ok_or_else(|| anyhow::anyhow!("no --target"))?;
    let http = crate::api::http_client()?;
    crate::api::ready(&http, target).await?;
    let mut staff_token = None;
    if args.rooms + args.boards + args.bookers > 0 {
        staff_token = Some(crate::api::clinician(&http, target, &args.staff).await?.token);
    }
    let mut admin_token = None;
    if args.rooms > 0 {
        let a = &args.admin;
        let login = (a.admin_email.as_ref(), a.admin_password.as_ref(), a.admin_totp.as_deref());
        let signed = crate::api::sign_in(&http, target, a.admin_token.as_deref(), login).await.ok_or_else(|| {
            anyhow::anyhow!("--rooms needs an administrator: --admin-email and --admin-password, or --admin-token")
        })?;
        admin_token = Some(signed.map_err(|e| e.error.context("admin sign-in"))?.token);
    }
    Ok((staff_token, admin_token))
}

/// `scan`'s options at their command-line defaults (u16zstd over the websocket, …).
fn scan_defaults() -> anyhow::Result<ScanArgs> {
    #[derive(clap::Parser)]
    struct Scan {
        #[command(flatten)]
        args: ScanArgs,
    }
    Ok(<Scan as clap::Parser>::try_parse_from(["scan"])?.args)
}

/// Folds one part's report into the combined one.
pub fn fold(into: &mut Report, part: &str, r: anyhow::Result<Report>) {
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            // Said even with --quiet: without it a failed part is only a count.
            eprintln!("loadtest: the {part} part failed: {e:#}");
            into.errors.add(format!("{part}_failed"));
            return;
        }
    };
    into.elapsed_s = into.elapsed_s.max(r.elapsed_s);
    if r.scan.is_some() {
        into.scan = r.scan;
    }
    for (k, v) in r.latencies {
        into.latencies.insert(format!("{part}_{k}"), v);
    }
    for (k, v) in r.counts {
        into.counts.insert(format!("{part}_{k}"), v);
    }
    let mut prefixed = Errors::default();
    for (k, v) in r.errors.0 {
        *prefixed.0.entry(format!("{part}_{k}")).or_default() += v;
    }
    into.errors.merge(&prefixed);
}

/// What a part's failure said, for the status line.
fn why(r: &anyhow::Result<Report>) -> Option<String> {
    r.as_ref().err().map(|e| format!("{e:#}"))
}

pub async fn run(args: &MixedArgs) -> anyhow::Result<Report> {
    let c = &args.common;
    let (staff_token, admin_token) = sign_in_once(args).await?;
    let mut scan_args = scan_defaults()?;
    scan_args.common = part_common(c);
    scan_args.scans = args.scans;
    scan_args.fps = args.fps;
    let consult_args = ConsultArgs {
        common: part_common(c),
        rooms: args.rooms,
        video_kbps: args.video_kbps,
        video_fps: 30.0,
        ping_every: DurationArg(std::time::Duration::from_millis(250)),
        staff: staff(&staff_token),
        admin: admin(&admin_token),
    };
    let dashboard_args = DashboardArgs {
        common: part_common(c),
        sockets: args.boards,
        rate: args.rate,
        staff: staff(&staff_token),
        waiting: 0,
        keep_waiting: false,
        admin_email: None,
        admin_password: None,
        admin_totp: None,
        admin_token: None,
    };
    let booking_args = BookingArgs {
        common: part_common(c),
        concurrency: args.bookers,
        slots: args.slots,
        skip_slots: BOOKING_SKIPS_SLOTS,
        staff: staff(&staff_token),
    };
    if !c.quiet {
        eprintln!(
            "loadtest: mixed: {} scans × {} fps, {} rooms × {} kbit/s, {} boards at {}/s, {} bookers on {} slots…",
            args.scans, args.fps, args.rooms, args.video_kbps, args.boards, args.rate, args.bookers, args.slots
        );
    }
    let skip = |n: usize| n == 0;
    let (s, k, d, b) = tokio::join!(
        async {
            if skip(args.scans) {
                None
            } else {
                Some(scan::run(&scan_args).await)
            }
        },
        async {
            if skip(args.rooms) {
                None
            } else {
                Some(consult::run(&consult_args).await)
            }
        },
        async {
            if skip(args.boards) {
                None
            } else {
                Some(dashboard::run(&dashboard_args).await)
            }
        },
        async {
            if skip(args.bookers) {
                None
            } else {
                Some(booking::run(&booking_args).await)
            }
        },
    );
    let mut report = Report::named(
        "mixed",
        &c.target,
        c.ramp_up.0.as_secs_f64(),
        0.0,
        BTreeMap::new(),
        BTreeMap::new(),
        Errors::default(),
    );
    for (part, r) in [("scan", s), ("consult", k), ("dashboard", d), ("booking", b)] {
        let Some(r) = r else { continue };
        if let (Some(e), false) = (why(&r), c.quiet) {
            eprintln!("loadtest: mixed: the {part} part failed: {e}");
        }
        fold(&mut report, part, r);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latencies;

    fn part(scenario: &str) -> Report {
        let mut l = Latencies::new();
        l.record(std::time::Duration::from_millis(7));
        let mut e = Errors::default();
        e.add("http_503");
        let lat = BTreeMap::from([("signalling".to_string(), l.summary())]);
        let counts = BTreeMap::from([("loss_pct".to_string(), 0.5)]);
        Report::named(scenario, &[], 0.0, 12.5, lat, counts, e)
    }

    #[test]
    fn the_scan_part_streams_u16zstd_over_the_websocket() {
        let a = scan_defaults().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.encoding, crate::frames::Encoding::U16Zstd);
        assert_eq!(a.transport, crate::Transport::Ws);
    }

    #[test]
    fn parts_fold_under_their_scenario_prefix() {
        let mut r = Report::named("mixed", &[], 0.0, 0.0, BTreeMap::new(), BTreeMap::new(), Errors::default());
        fold(&mut r, "consult", Ok(part("consult")));
        fold(&mut r, "booking", Err(anyhow::anyhow!("no clinician")));
        assert_eq!(r.elapsed_s, 12.5);
        assert_eq!(r.latencies["consult_signalling"].count, 1);
        assert_eq!(r.counts["consult_loss_pct"], 0.5);
        assert_eq!(r.errors.0["consult_http_503"], 1);
        assert_eq!(r.errors.0["booking_failed"], 1);
        // SLOs reach the parts by their prefixed names, and the consult ones by theirs.
        let slo: crate::slo::Slo = "consult_signalling_p99_ms=10".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(slo.check(&r).met);
        let slo: crate::slo::Slo = "loss_pct=1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(slo.check(&r).met, "{:?}", slo.check(&r));
    }
}
