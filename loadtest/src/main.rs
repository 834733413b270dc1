//! `loadtest`: drives a Coherency deployment with simulated phones, live dashboards,
//! booking storms, video consults and a mix of them all, reports throughput, HDR latency
//! percentiles and errors by code as a table and as JSON, and exits non-zero when an SLO is
//! missed.
//!
//! Exit codes: 0 success, 1 an SLO was missed, 2 usage error or scenario not implemented
//! yet, 3 the run could not be carried out (target not ready, setup failed).

mod api;
mod booking;
mod consult;
mod dashboard;
mod frames;
mod mixed;
mod scan;
mod slo;
mod stats;

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::frames::Encoding;
use crate::slo::Slo;

/// A duration on the command line: `30s`, `500ms`, `2m`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else if let Some(n) = s.strip_suffix('h') {
            (n, 3600.0)
        } else {
            (s, 1.0)
        };
        let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
        let secs = v * mult;
        if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
            return Err(format!("{s:?}: a duration between 0 and 24 h"));
        }
        Ok(DurationArg(Duration::from_secs_f64(secs)))
    }
}

/// Options every scenario takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Base URL of a node; repeat (or comma-separate) for several nodes sharing one
    /// deployment: every scenario deals its phones, rooms, boards, changes or attempts
    /// round-robin over them. Docs and tests use 127.0.0.1 only.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "LOADTEST_TARGET", value_delimiter = ',')]
    pub target: Vec<String>,
    /// Spread the start of the clients evenly over this long.
    #[arg(long, default_value = "0s")]
    pub ramp_up: DurationArg,
    /// How long each client runs (for `scan`: stream time per phone; with `--frames`,
    /// whichever ends first).
    #[arg(long)]
    pub duration: Option<DurationArg>,
    /// An objective, e.g. `ack_p99_ms=50`, `min_fps=900`, `min_fps_ratio=0.99`,
    /// `max_errors=0`; repeatable. Exit code 1 when any is missed.
    #[arg(long = "slo", value_name = "NAME=VALUE")]
    pub slo: Vec<Slo>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// No progress bar or status lines (the report table is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Transports for the scan stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The websocket `GET /v1/scans/{id}/stream`.
    Ws,
    /// A WebRTC data channel signalled over `GET /v1/scans/{id}/rtc`.
    Datachannel,
}

/// `scan` options.
#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent phones, each with its own patient and scan.
    #[arg(long, default_value_t = 1)]
    pub scans: usize,
    /// Frames per second each phone sends.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Frames per phone (default 300, or what `--duration` allows).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Depth encoding on the wire.
    #[arg(long, value_enum, default_value = "u16zstd")]
    pub encoding: Encoding,
    /// Send the confidence plane too (as the app does when ARKit provides it).
    #[arg(long)]
    pub confidence: bool,
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Most unacked frames per phone (the server's `welcome.window` may lower it).
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Distinct pre-rendered frames, cycled.
    #[arg(long, default_value_t = 30)]
    pub ring: usize,
    /// Attach a colour JPEG to every Nth frame sent, the first included (30 at 30 fps: one a
    /// second), as the app attaches ARKit's `capturedImage`: a 1920×1440 close-up of a wound
    /// on skin, made once at start-up, at most 400 kB. 0: no colour.
    #[arg(long, default_value_t = 0)]
    pub colour_every: u64,
}

/// The clinician a scenario runs as: a login, or a token they already hold.
#[derive(Debug, Args)]
pub struct StaffArgs {
    /// A clinician's email (the demo clinician works).
    #[arg(long, env = "LOADTEST_STAFF_EMAIL")]
    pub staff_email: Option<String>,
    /// Their password.
    #[arg(long, env = "LOADTEST_STAFF_PASSWORD", hide_env_values = true)]
    pub staff_password: Option<String>,
    /// Their TOTP secret (base32), when enrolled: the current code is computed.
    #[arg(long, env = "LOADTEST_STAFF_TOTP", hide_env_values = true)]
    pub staff_totp: Option<String>,
    /// Instead of signing in: an access token the clinician already holds.
    #[arg(long, env = "LOADTEST_STAFF_TOKEN", hide_env_values = true, conflicts_with = "staff_email")]
    pub staff_token: Option<String>,
}

/// An administrator (for scenarios that put patients on a clinician's care team).
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// An administrator's email.
    #[arg(long, env = "LOADTEST_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Their password.
    #[arg(long, env = "LOADTEST_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Their TOTP secret (base32), when enrolled.
    #[arg(long, env = "LOADTEST_ADMIN_TOTP", hide_env_values = true)]
    pub admin_totp: Option<String>,
    /// Instead of signing in: an administrator's access token.
    #[arg(long, env = "LOADTEST_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_email")]
    pub admin_token: Option<String>,
}

/// `consult` options.
#[derive(Debug, Args)]
pub struct ConsultArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent two-person rooms (the clinician below hosts them all; a new patient each).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Video bitrate each participant publishes, kbit/s (RTP payload).
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// Video frames per second (each frame split into packets of at most 1200 bytes).
    #[arg(long, default_value_t = 30.0)]
    pub video_fps: f64,
    /// How often each participant pings on its signalling socket while measuring.
    #[arg(long, default_value = "250ms")]
    pub ping_every: DurationArg,
    #[command(flatten)]
    pub staff: StaffArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `mixed` options: a small part of every scenario at once; 0 leaves a part out.
#[derive(Debug, Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Phones streaming scans (`scan`).
    #[arg(long, default_value_t = 2)]
    pub scans: usize,
    /// Their frames per second.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Two-person video rooms (`consult`; needs an administrator).
    #[arg(long, default_value_t = 2)]
    pub rooms: usize,
    /// Video bitrate per participant, kbit/s.
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// Live boards (`dashboard`).
    #[arg(long, default_value_t = 20)]
    pub boards: usize,
    /// Calendar changes per second the boards watch.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Patients in the booking storm (`booking`).
    #[arg(long, default_value_t = 8)]
    pub bookers: usize,
    /// Hot slots they race for.
    #[arg(long, default_value_t = 3)]
    pub slots: usize,
    #[command(flatten)]
    pub staff: StaffArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `booking` options.
#[derive(Debug, Args)]
pub struct BookingArgs {
    #[command(flatten)]
    pub common: Common,
    /// Patients booking at once, each in a loop.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Hot slots they race for (the clinician's first free slots).
    #[arg(long, default_value_t = 10)]
    pub slots: usize,
    /// Leave the clinician's first N free slots alone (`mixed` keeps the storm off the
    /// slots its dashboard part books).
    #[arg(long, default_value_t = 0)]
    pub skip_slots: usize,
    #[command(flatten)]
    pub staff: StaffArgs,
}

/// `dashboard` options.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub common: Common,
    /// Boards held open, all signed in as the clinician below.
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    /// Calendar changes per second (a patient booking a slot, or cancelling it).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Patients checked in to consults with the clinician, waiting on the boards during the
    /// run (needs an admin login below, to put them on the clinician's care team).
    #[arg(long, default_value_t = 0)]
    pub waiting: usize,
    /// Leave those patients waiting when the run ends (a demo board); by default their
    /// consults are ended.
    #[arg(long)]
    pub keep_waiting: bool,
    /// An administrator's email (for `--waiting`).
    #[arg(long, env = "LOADTEST_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Their password.
    #[arg(long, env = "LOADTEST_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Their TOTP secret (base32), when enrolled.
    #[arg(long, env = "LOADTEST_ADMIN_TOTP", hide_env_values = true)]
    pub admin_totp: Option<String>,
    /// Instead of signing in: an administrator's access token.
    #[arg(long, env = "LOADTEST_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_email")]
    pub admin_token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Phones streaming phantom LiDAR frames at a fixed rate.
    Scan(ScanArgs),
    /// Two-person video rooms: webrtc-rs peers sending synthetic video through the SFU.
    Consult(ConsultArgs),
    /// Patients racing for a few hot slots of one clinician.
    Booking(BookingArgs),
    /// Live boards watching a clinician's calendar change.
    Dashboard(DashboardArgs),
    /// A little of every scenario at once, one combined report.
    Mixed(MixedArgs),
}

/// Load harness for Coherency.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

fn finish(mut report: stats::Report, common: &Common) -> ExitCode {
    report.slo = common.slo.iter().map(|s| s.check(&report)).collect();
    print!("{}", report.table());
    if let Some(path) = &common.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("loadtest: writing {}: {e}", path.display());
                    return ExitCode::from(3);
                }
            }
            Err(e) => {
                eprintln!("loadtest: serialising the report: {e}");
                return ExitCode::from(3);
            }
        }
    }
    if report.slo_met() {
        ExitCode::SUCCESS
    } else {
        eprintln!("loadtest: SLO missed");
        ExitCode::from(1)
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<stats::Report>>>(run: F, common: &Common) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: starting the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match rt.block_on(run) {
        Ok(report) => finish(report, common),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn usage(e: &str) -> ExitCode {
    eprintln!("loadtest: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    match Cli::parse().scenario {
        Scenario::Scan(args) => block_on(scan::run(&args), &args.common),
        Scenario::Dashboard(args) => block_on(dashboard::run(&args), &args.common),
        Scenario::Booking(args) => block_on(booking::run(&args), &args.common),
        Scenario::Consult(args) => match consult::check(&args) {
            Ok(()) => block_on(consult::run(&args), &args.common),
            Err(e) => usage(&e),
        },
        Scenario::Mixed(args) => match mixed::check(&args) {
            Ok(()) => block_on(mixed::run(&args), &args.common),
            Err(e) => usage(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let d = |s: &str| s.parse::<DurationArg>().map(|d| d.0);
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "fast", "-1s", "2d", "1e9"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_parses_a_scan_run() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "scan",
            "--target",
            "http://127.0.0.1:18300",
            "--target",
            "http://127.0.0.1:18301",
            "--scans",
            "8",
            "--fps",
            "60",
            "--duration",
            "10s",
            "--ramp-up",
            "2s",
            "--encoding",
            "f32",
            "--colour-every",
            "30",
            "--slo",
            "ack_p99_ms=50",
            "--slo",
            "max_errors=0",
            "--json",
            "/tmp/x.json",
        ]);
        let Ok(Cli { scenario: Scenario::Scan(a) }) = cli else { panic!("{cli:?}") };
        assert_eq!(a.common.target.len(), 2);
        assert_eq!((a.scans, a.fps, a.encoding, a.colour_every), (8, 60.0, Encoding::F32, 30));
        assert_eq!(a.common.slo.len(), 2);
        assert_eq!(a.common.ramp_up.0, Duration::from_secs(2));
        let two = Cli::try_parse_from(["loadtest", "booking", "--target", "http://127.0.0.1:1,http://127.0.0.1:2"]);
        let Ok(Cli { scenario: Scenario::Booking(b) }) = two else { panic!("{two:?}") };
        assert_eq!(b.common.target, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(Cli::try_parse_from(["loadtest", "scan", "--slo", "p99=5"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "scan", "--encoding", "png"]).is_err());
    }

    #[test]
    fn cli_parses_consult_and_mixed_runs() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "consult",
            "--rooms",
            "20",
            "--video-kbps",
            "500",
            "--duration",
            "20s",
            "--staff-token",
            "t",
            "--admin-token",
            "a",
            "--slo",
            "signalling_p99_ms=50",
            "--slo",
            "loss_pct=1",
        ]);
        let Ok(Cli { scenario: Scenario::Consult(a) }) = cli else { panic!("{cli:?}") };
        assert_eq!((a.rooms, a.video_kbps, a.video_fps), (20, 500, 30.0));
        assert_eq!(a.ping_every.0, Duration::from_millis(250));
        assert_eq!(a.admin.admin_token.as_deref(), Some("a"));
        assert_eq!(a.common.slo.len(), 2);
        assert!(consult::check(&a).is_ok());
        let bad = Cli::try_parse_from(["loadtest", "consult", "--rooms", "0"]);
        let Ok(Cli { scenario: Scenario::Consult(b) }) = bad else { panic!("{bad:?}") };
        assert!(consult::check(&b).is_err());

        let cli = Cli::try_parse_from(["loadtest", "mixed", "--rooms", "0", "--bookers", "4"]);
        let Ok(Cli { scenario: Scenario::Mixed(m) }) = cli else { panic!("{cli:?}") };
        assert_eq!((m.scans, m.rooms, m.boards, m.bookers, m.slots), (2, 0, 20, 4, 3));
        assert!(mixed::check(&m).is_ok());
        let none = Cli::try_parse_from([
            "loadtest",
            "mixed",
            "--scans",
            "0",
            "--rooms",
            "0",
            "--boards",
            "0",
            "--bookers",
            "0",
        ]);
        let Ok(Cli { scenario: Scenario::Mixed(n) }) = none else { panic!("{none:?}") };
        assert!(mixed::check(&n).is_err());
    }
}
