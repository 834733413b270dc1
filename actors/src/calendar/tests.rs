//! The calendar actor against the in-memory store and bus (`crate::testing`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as D, Utc};
use uuid::Uuid;

use super::*;
use crate::testing::{FakeBookingStore, FakeEventBus};

struct Setup {
    calendars: Arc<Calendars>,
    store: Arc<FakeBookingStore>,
    bus: Arc<FakeEventBus>,
    ty: AppointmentType,
    /// A slot start: tomorrow, 10:00 UTC.
    at: DateTime<Utc>,
}

/// One clinician; views never go stale on their own, so every change a test sees in the
/// view came from a message, not a reload.
fn setup() -> Setup {
    let clinician = Uuid::now_v7();
    let (store, ty) = FakeBookingStore::with_clinician(clinician);
    let (store, bus) = (Arc::new(store), Arc::new(FakeEventBus::default()));
    let calendars = Calendars::new(CalendarDeps {
        store: store.clone(),
        bus: bus.clone(),
        now: Arc::new(Utc::now),
        max_age: Duration::from_secs(3600),
        idle: Duration::from_secs(3600),
    });
    let tomorrow = (Utc::now() + D::days(1)).date_naive();
    let at = tomorrow.and_hms_opt(10, 0, 0).map(|t| t.and_utc()).unwrap_or_else(Utc::now);
    Setup { calendars, store, bus, ty, at }
}

fn hold(s: &Setup, start: DateTime<Utc>) -> NewHold {
    NewHold {
        clinician_id: s.ty.clinician_id,
        patient_id: Uuid::now_v7(),
        type_id: s.ty.id,
        start,
        confirm: false,
        created_by: Uuid::now_v7(),
        idempotency_key: None,
    }
}

#[actix_rt::test]
async fn two_holds_on_one_slot_make_one_hold_and_one_conflict() {
    let s = setup();
    let (a, b) = tokio::join!(s.calendars.hold(hold(&s, s.at)), s.calendars.hold(hold(&s, s.at)));
    let (won, lost): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 1));
    assert_eq!(lost[0].as_ref().err(), Some(&BookingError::SlotTaken));
    let live: Vec<_> = s.store.rows().into_iter().filter(|r| r.status == "held").collect();
    assert_eq!(live.len(), 1, "one live row");
    assert_eq!(s.bus.kinds(), vec![EventKind::Held], "only the winner published");
}

#[actix_rt::test]
async fn a_refusal_from_the_view_never_reaches_the_store() {
    let s = setup();
    s.calendars.hold(hold(&s, s.at)).await.unwrap();
    let writes = s.store.writes();
    let err = s.calendars.hold(hold(&s, s.at)).await.unwrap_err();
    assert_eq!(err, BookingError::SlotTaken);
    assert_eq!(s.store.writes(), writes, "the taken time was refused without a write");
    assert_eq!(s.store.loads(), 1, "one load served every attempt");
}

#[actix_rt::test]
async fn a_cancel_frees_the_slot_in_the_view() {
    let s = setup();
    let held = s.calendars.hold(hold(&s, s.at)).await.unwrap().appointment;
    let clinician = s.ty.clinician_id;
    assert_eq!(s.calendars.check(clinician, s.ty.id, s.at).await, Ok(Verdict::Taken));
    let cancel = Cancel { id: held.id, by: held.patient_id, reason: "changed my mind".into() };
    let cancelled = s.calendars.cancel(clinician, cancel).await.unwrap();
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(s.calendars.check(clinician, s.ty.id, s.at).await, Ok(Verdict::Unknown));
    assert_eq!(s.store.loads(), 1, "the view learned of the cancel without a reload");
    let again = s.calendars.hold(hold(&s, s.at)).await.unwrap();
    assert_eq!(again.appointment.start_at, s.at);
    assert_eq!(s.bus.kinds(), vec![EventKind::Held, EventKind::Cancelled, EventKind::Held]);
}

#[actix_rt::test]
async fn another_nodes_change_applied_as_a_message_updates_the_view() {
    let s = setup();
    let clinician = s.ty.clinician_id;
    let later = s.at + D::hours(1);
    assert_eq!(s.calendars.check(clinician, s.ty.id, later).await, Ok(Verdict::Unknown));
    let elsewhere = s.store.book_elsewhere(&s.ty, later, Utc::now());
    assert_eq!(
        s.calendars.check(clinician, s.ty.id, later).await,
        Ok(Verdict::Unknown),
        "this node has not heard of it yet"
    );
    s.calendars.apply(&[elsewhere]);
    assert_eq!(s.calendars.check(clinician, s.ty.id, later).await, Ok(Verdict::Taken));
    let writes = s.store.writes();
    assert_eq!(s.calendars.hold(hold(&s, later)).await.unwrap_err(), BookingError::SlotTaken);
    assert_eq!(s.store.writes(), writes);
    assert!(s.bus.kinds().is_empty(), "another node's change is not published again");
}

#[actix_rt::test]
async fn a_reschedule_moves_the_booking_and_a_start_off_the_grid_is_refused() {
    let s = setup();
    let clinician = s.ty.clinician_id;
    let held = s.calendars.hold(hold(&s, s.at)).await.unwrap().appointment;
    let off_grid = s.at + D::minutes(10);
    let bad = Reschedule { id: held.id, by: held.patient_id, type_id: s.ty.id, start: off_grid };
    let err = s.calendars.reschedule(clinician, bad).await.unwrap_err();
    assert_eq!((err.clone(), err.field()), (BookingError::NotASlot, Some("start")));
    let later = s.at + D::hours(2);
    let msg = Reschedule { id: held.id, by: held.patient_id, type_id: s.ty.id, start: later };
    let moved = s.calendars.reschedule(clinician, msg).await.unwrap();
    assert_eq!((moved.start_at, moved.rescheduled_from), (later, Some(held.id)));
    assert_eq!(s.calendars.check(clinician, s.ty.id, later).await, Ok(Verdict::Taken));
}

#[actix_rt::test]
async fn an_idle_calendar_stops_and_the_next_message_starts_it_again() {
    let clinician = Uuid::now_v7();
    let (store, ty) = FakeBookingStore::with_clinician(clinician);
    let calendars = Calendars::new(CalendarDeps {
        store: Arc::new(store),
        bus: Arc::new(FakeEventBus::default()),
        now: Arc::new(Utc::now),
        max_age: Duration::from_secs(3600),
        idle: Duration::from_millis(20),
    });
    let at = (Utc::now() + D::days(1)).date_naive().and_hms_opt(11, 0, 0).map(|t| t.and_utc()).unwrap_or_else(Utc::now);
    assert_eq!(calendars.check(clinician, ty.id, at).await, Ok(Verdict::Unknown));
    assert_eq!(calendars.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !calendars.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the idle calendar never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(calendars.check(clinician, ty.id, at).await, Ok(Verdict::Unknown));
}
