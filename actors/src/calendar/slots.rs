//! Slot generation: weekly rules and dated exceptions in the clinician's IANA zone become
//! absolute windows, and windows become slots. Pure and synchronous.
//!
//! DST: a window's wall-clock ends are resolved in the clinician's zone for that date. A
//! wall time that does not exist (spring forward) moves to the first instant after the gap;
//! an ambiguous one (fall back) resolves to the earlier instant for a start and the later
//! for an end, so a window never loses real time. Slots then step through the window in
//! absolute time, so a 00:00–04:00 window is three hours long on a spring-forward day and
//! five on a fall-back day, and no slot is produced twice.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A weekly availability window (ISO weekday, 1 = Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub weekday: u32,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A dated change to the weekly rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub day: NaiveDate,
    /// `true` adds hours (`extra`), `false` removes them (`off`).
    pub extra: bool,
    /// `None` with `extra == false` is the whole day off.
    pub hours: Option<(NaiveTime, NaiveTime)>,
}

/// Length and buffers of an appointment type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub duration: Duration,
    pub buffer_before: Duration,
    pub buffer_after: Duration,
}

impl Shape {
    /// Distance between consecutive slot starts: the appointment and both buffers, so every
    /// slot offered can be booked back to back.
    pub fn step(&self) -> Duration {
        self.duration + self.buffer_before + self.buffer_after
    }
}

fn minutes(t: NaiveTime) -> i64 {
    i64::from(chrono::Timelike::num_seconds_from_midnight(&t)) / 60
}

/// Subtracts `[a,b)` from a sorted list of minute intervals.
fn subtract(list: Vec<(i64, i64)>, a: i64, b: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for (s, e) in list {
        if e <= a || s >= b {
            out.push((s, e));
            continue;
        }
        if s < a {
            out.push((s, a));
        }
        if e > b {
            out.push((b, e));
        }
    }
    out
}

fn union(mut list: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    list.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (s, e) in list {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Wall-clock minute intervals open on `day`.
pub fn day_hours(day: NaiveDate, rules: &[Rule], exceptions: &[Exception]) -> Vec<(i64, i64)> {
    let wd = day.weekday().number_from_monday();
    let mut list: Vec<(i64, i64)> =
        rules.iter().filter(|r| r.weekday == wd).map(|r| (minutes(r.start), minutes(r.end))).collect();
    for ex in exceptions.iter().filter(|e| e.day == day && e.extra) {
        if let Some((s, e)) = ex.hours {
            list.push((minutes(s), minutes(e)));
        }
    }
    let mut list = union(list);
    for ex in exceptions.iter().filter(|e| e.day == day && !e.extra) {
        match ex.hours {
            None => return Vec::new(),
            Some((s, e)) => list = subtract(list, minutes(s), minutes(e)),
        }
    }
    list
}

/// The instant a wall-clock time names in `tz` (see the module note for gaps and overlaps).
pub fn resolve(tz: Tz, local: NaiveDateTime, is_end: bool) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => if is_end { b } else { a }.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first wall minute after it names the instant the gap ends.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&local)
        }
    }
}

/// Absolute availability windows for the local days `from_day..=to_day`.
pub fn windows(
    tz: Tz,
    rules: &[Rule],
    exceptions: &[Exception],
    from_day: NaiveDate,
    to_day: NaiveDate,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut day = from_day;
    while day <= to_day {
        for (s, e) in day_hours(day, rules, exceptions) {
            let midnight = day.and_time(NaiveTime::MIN);
            let start = resolve(tz, midnight + Duration::minutes(s), false);
            let end = resolve(tz, midnight + Duration::minutes(e), true);
            if end > start {
                out.push((start, end));
            }
        }
        match day.succ_opt() {
            Some(d) => day = d,
            None => break,
        }
    }
    out
}

/// Slot `[start, end)` pairs inside `windows`, stepping by `shape.step()` in absolute time.
pub fn slots(windows: &[(DateTime<Utc>, DateTime<Utc>)], shape: Shape) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let step = shape.step().max(Duration::minutes(1));
    for &(ws, we) in windows {
        let mut t = ws;
        while t + shape.duration <= we {
            out.push((t, t + shape.duration));
            t += step;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
    }
    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }
    fn every_day(s: NaiveTime, e: NaiveTime) -> Vec<Rule> {
        (1..=7).map(|weekday| Rule { weekday, start: s, end: e }).collect()
    }
    const HALF_HOUR: Shape =
        Shape { duration: Duration::minutes(30), buffer_before: Duration::zero(), buffer_after: Duration::zero() };

    fn count(tz: Tz, day: NaiveDate, s: NaiveTime, e: NaiveTime) -> usize {
        slots(&windows(tz, &every_day(s, e), &[], day, day), HALF_HOUR).len()
    }

    #[test]
    fn a_night_window_loses_an_hour_in_spring_and_gains_one_in_autumn() {
        for (tz, spring, autumn) in [
            (chrono_tz::Europe::London, d(2027, 3, 28), d(2027, 10, 31)),
            (chrono_tz::America::New_York, d(2027, 3, 14), d(2027, 11, 7)),
        ] {
            assert_eq!(count(tz, spring - Duration::days(7), t(0, 0), t(4, 0)), 8, "{tz} ordinary");
            assert_eq!(count(tz, spring, t(0, 0), t(4, 0)), 6, "{tz} spring forward");
            assert_eq!(count(tz, autumn, t(0, 0), t(4, 0)), 10, "{tz} fall back");
        }
    }

    #[test]
    fn slots_never_repeat_an_instant_on_the_fall_back_day() {
        let w = windows(chrono_tz::Europe::London, &every_day(t(0, 0), t(4, 0)), &[], d(2027, 10, 31), d(2027, 10, 31));
        let s = slots(&w, HALF_HOUR);
        let mut starts: Vec<_> = s.iter().map(|x| x.0).collect();
        starts.dedup();
        assert_eq!(starts.len(), s.len());
        assert_eq!(s[0].0, Utc.with_ymd_and_hms(2027, 10, 30, 23, 0, 0).unwrap());
    }

    #[test]
    fn a_window_starting_in_the_gap_starts_when_the_gap_ends() {
        // New York jumps 02:00 → 03:00 on 2027-03-14; 02:30 does not exist.
        let w =
            windows(chrono_tz::America::New_York, &every_day(t(2, 30), t(4, 0)), &[], d(2027, 3, 14), d(2027, 3, 14));
        assert_eq!(
            w,
            vec![(
                Utc.with_ymd_and_hms(2027, 3, 14, 7, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 3, 14, 8, 0, 0).unwrap()
            )]
        );
    }

    #[test]
    fn nine_o_clock_follows_the_wall_clock_across_dst() {
        let w = |day| windows(chrono_tz::Europe::London, &every_day(t(9, 0), t(10, 0)), &[], day, day)[0].0;
        assert_eq!(w(d(2027, 3, 27)), Utc.with_ymd_and_hms(2027, 3, 27, 9, 0, 0).unwrap());
        assert_eq!(w(d(2027, 3, 29)), Utc.with_ymd_and_hms(2027, 3, 29, 8, 0, 0).unwrap());
    }

    #[test]
    fn exceptions_remove_and_add_hours() {
        let rules = every_day(t(9, 0), t(12, 0));
        let day = d(2027, 1, 4);
        let off = [Exception { day, extra: false, hours: Some((t(10, 0), t(11, 0))) }];
        assert_eq!(day_hours(day, &rules, &off), vec![(540, 600), (660, 720)]);
        let whole = [Exception { day, extra: false, hours: None }];
        assert!(day_hours(day, &rules, &whole).is_empty());
        let extra = [Exception { day, extra: true, hours: Some((t(11, 30), t(14, 0))) }];
        assert_eq!(day_hours(day, &rules, &extra), vec![(540, 840)]);
    }

    #[test]
    fn buffers_space_the_slots() {
        let shape = Shape {
            duration: Duration::minutes(30),
            buffer_before: Duration::minutes(5),
            buffer_after: Duration::minutes(10),
        };
        let w = windows(chrono_tz::UTC, &every_day(t(9, 0), t(11, 0)), &[], d(2027, 1, 4), d(2027, 1, 4));
        let s = slots(&w, shape);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].0 - s[0].0, Duration::minutes(45));
    }
}
