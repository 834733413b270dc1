//! The [`Calendar`] actor (one per clinician booked on this node) and its registry,
//! [`Calendars`].
//!
//! A hold runs in two parts. The checks that only read (the view's verdict, a fresh
//! schedule and type, a plain read of the calendar) run beside the actor, so many attempts
//! can check at once; the write then queues in the actor's mailbox (`Commit`, an atomic
//! message), where the view and the calendar are asked again before the transaction. When a
//! time frees, every attempt that saw it free queues there, and once the first has booked it
//! (applied to the view before the next commit runs) the rest lose without a round trip.
//! Reschedules commit the same way; confirm, cancel and no-show take no calendar time and
//! run beside the actor, then apply their changes to its view before they answer.
//!
//! Database work runs in futures spawned beside the actor (never in its context), so an
//! atomic commit that waits on the database does not stall the others' reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use coherency_protocol::{Code, ErrorCode};
use uuid::Uuid;

use super::view::{Verdict, View};
use super::{
    require_slot, Appointment, AppointmentType, BookingError, BookingEvent, BookingStore, Done, EventBus, EventKind,
    NewHold,
};

/// Where a calendar's time comes from (the server's test-adjustable clock).
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Longest wait between two idleness checks of one calendar.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(60);
/// Most messages queued for one calendar.
const MAILBOX: usize = 1024;

/// What every calendar of a node shares.
#[derive(Clone)]
pub struct CalendarDeps {
    pub store: Arc<dyn BookingStore>,
    pub bus: Arc<dyn EventBus>,
    pub now: Now,
    /// A view older than this is reloaded before it answers (`0`: on every attempt).
    pub max_age: Duration,
    /// A calendar that received nothing for this long stops (and its view with it).
    pub idle: Duration,
}

/// One clinician's calendar on this node.
pub struct Calendar {
    clinician_id: Uuid,
    deps: CalendarDeps,
    /// `None` until first asked, and after the schedule or types changed here.
    view: Option<View>,
    used: Instant,
    registry: Weak<Calendars>,
}

impl Calendar {
    fn now(&self) -> DateTime<Utc> {
        (self.deps.now)()
    }

    fn fresh_view(&self) -> Option<&View> {
        self.view.as_ref().filter(|v| v.fresh(self.deps.max_age))
    }

    /// Reloads the view when it is missing or too old. Run inside atomic messages only, so
    /// changes that arrive meanwhile queue and are applied on top of what it read.
    fn load_if_stale(&mut self) -> ResponseActFuture<Self, Result<(), BookingError>> {
        if self.fresh_view().is_some() {
            return Box::pin(ready(Ok(())));
        }
        let (store, clinician, now, started) = (self.deps.store.clone(), self.clinician_id, self.now(), Instant::now());
        let load = spawned(async move { store.load_calendar(clinician, now).await });
        Box::pin(load.into_actor(self).map(move |res, act, _| {
            act.view = Some(View::new(started, res?));
            Ok(())
        }))
    }

    fn verdict(&self, type_id: Uuid, start: DateTime<Utc>) -> Verdict {
        self.view.as_ref().map_or(Verdict::Unknown, |v| v.verdict(type_id, start, self.now()))
    }

    /// Applies this node's committed changes to the view, then tells the other nodes.
    fn committed(&mut self, events: &[BookingEvent]) {
        if events.is_empty() {
            return;
        }
        if let Some(v) = self.view.as_mut() {
            for e in events {
                v.apply(e);
            }
        }
        self.deps.bus.publish(events.to_vec());
    }
}

impl Actor for Calendar {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(self.deps.idle.min(IDLE_CHECK_EVERY), |act, ctx| {
            if act.used.elapsed() >= act.deps.idle {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if let Some(r) = self.registry.upgrade() {
            r.forget(self.clinician_id, &ctx.address());
        }
    }
}

/// Runs `fut` as its own task, so the actor's context only waits for its answer.
async fn spawned<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, BookingError>> + Send + 'static,
) -> Result<T, BookingError> {
    tokio::spawn(fut).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "booking store task failed");
        Err(BookingError::internal())
    })
}

/// Holds (or, with `confirm`, books) a slot.
#[derive(Message, Clone)]
#[rtype(result = "Result<Held, BookingError>")]
pub struct Hold(pub NewHold);

/// A hold's answer.
#[derive(Debug, Clone)]
pub struct Held {
    pub appointment: Appointment,
    /// The hold's `Idempotency-Key` had already made this appointment.
    pub replayed: bool,
}

/// Turns a live hold into a booking.
#[derive(Message, Clone)]
#[rtype(result = "Result<Appointment, BookingError>")]
pub struct Confirm {
    pub id: Uuid,
}

/// Cancels a hold or booking; the freed time goes to the waitlist.
#[derive(Message, Clone)]
#[rtype(result = "Result<Appointment, BookingError>")]
pub struct Cancel {
    pub id: Uuid,
    /// Who cancels (user id).
    pub by: Uuid,
    pub reason: String,
}

/// Moves a hold or booking to another slot of this clinician; answers the new appointment.
#[derive(Message, Clone)]
#[rtype(result = "Result<Appointment, BookingError>")]
pub struct Reschedule {
    pub id: Uuid,
    pub by: Uuid,
    /// The new appointment's type (the old one's, unless the caller chose another).
    pub type_id: Uuid,
    pub start: DateTime<Utc>,
}

/// Marks a started booking a no-show.
#[derive(Message, Clone)]
#[rtype(result = "Result<Appointment, BookingError>")]
pub struct NoShow {
    pub id: Uuid,
}

/// Asks the view about an attempt (reloading it when stale).
#[derive(Message, Clone)]
#[rtype(result = "Result<Verdict, BookingError>")]
pub struct Check {
    pub type_id: Uuid,
    pub start: DateTime<Utc>,
}

/// Changes committed elsewhere (another node, or the sweeper), applied to the view.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<BookingEvent>);

/// The schedule or types changed: drop the view; the next attempt reloads it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Invalidate;

/// The write of a hold whose reads passed.
#[derive(Message)]
#[rtype(result = "Result<Done, BookingError>")]
struct Commit {
    hold: NewHold,
    ty: AppointmentType,
}

/// The write of a reschedule whose reads passed.
#[derive(Message)]
#[rtype(result = "Result<Done, BookingError>")]
struct CommitMove {
    id: Uuid,
    by: Uuid,
    ty: AppointmentType,
    start: DateTime<Utc>,
}

/// Changes this node committed beside the actor: applied, then published.
#[derive(Message)]
#[rtype(result = "()")]
struct Committed(Vec<BookingEvent>);

fn stopped(_: MailboxError) -> BookingError {
    BookingError::Stopped
}

impl Handler<Hold> for Calendar {
    type Result = ResponseFuture<Result<Held, BookingError>>;

    fn handle(&mut self, Hold(h): Hold, ctx: &mut Context<Self>) -> Self::Result {
        self.used = Instant::now();
        let known = self.fresh_view().map(|v| v.verdict(h.type_id, h.start, self.now()));
        let (me, store, now) = (ctx.address(), self.deps.store.clone(), self.deps.now.clone());
        Box::pin(async move {
            let res = attempt(&me, store.as_ref(), &h, known, &now).await;
            match res {
                Ok(done) => Ok(Held { appointment: done.appointment, replayed: false }),
                Err(e) => {
                    if let (Some(k), true) =
                        (&h.idempotency_key, matches!(e.code(), Code::Internal | Code::Conflict | Code::SlotTaken))
                    {
                        // A concurrent replay of the same key got there first (its row
                        // blocks the time, or won the unique index).
                        if let Some(a) = store.by_idempotency_key(h.created_by, k).await? {
                            return Ok(Held { appointment: a, replayed: true });
                        }
                    }
                    Err(e)
                }
            }
        })
    }
}

/// A hold's reads, then its commit through the mailbox.
async fn attempt(
    me: &Addr<Calendar>,
    store: &dyn BookingStore,
    h: &NewHold,
    known: Option<Verdict>,
    now: &Now,
) -> Result<Done, BookingError> {
    let verdict = match known {
        Some(v) => v,
        None => me.send(Check { type_id: h.type_id, start: h.start }).await.map_err(stopped)??,
    };
    if verdict == Verdict::Taken {
        return Err(BookingError::SlotTaken);
    }
    let ty = slot_type(store, h.clinician_id, h.type_id, h.start, now).await?;
    let (_, _, bs, be) = ty.block(h.start);
    if store.taken(h.clinician_id, bs, be, now()).await? {
        return Err(BookingError::SlotTaken);
    }
    me.send(Commit { hold: h.clone(), ty }).await.map_err(stopped)?
}

/// The clinician's active type `type_id`, if `start` is one of its slots by the schedule as
/// stored now (never the view's copy: a schedule changed on another node counts at once).
async fn slot_type(
    store: &dyn BookingStore,
    clinician_id: Uuid,
    type_id: Uuid,
    start: DateTime<Utc>,
    now: &Now,
) -> Result<AppointmentType, BookingError> {
    let sched = store.load_schedule(clinician_id).await?.ok_or(BookingError::NoSchedule)?;
    let ty = store
        .load_type(type_id)
        .await?
        .filter(|t| t.clinician_id == clinician_id && t.active)
        .ok_or(BookingError::NoType)?;
    require_slot(&sched, &ty, start, now())?;
    Ok(ty)
}

impl Handler<Check> for Calendar {
    type Result = AtomicResponse<Self, Result<Verdict, BookingError>>;

    fn handle(&mut self, msg: Check, _: &mut Context<Self>) -> Self::Result {
        self.used = Instant::now();
        AtomicResponse::new(Box::pin(
            self.load_if_stale().map(move |res, act, _| res.map(|()| act.verdict(msg.type_id, msg.start))),
        ))
    }
}

impl Handler<Commit> for Calendar {
    type Result = AtomicResponse<Self, Result<Done, BookingError>>;

    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) -> Self::Result {
        let store = self.deps.store.clone();
        let step = self.load_if_stale().then(move |loaded, act, _| -> ResponseActFuture<Self, _> {
            if let Err(e) = loaded {
                return Box::pin(ready(Err(e)));
            }
            if act.verdict(msg.ty.id, msg.hold.start) == Verdict::Taken {
                return Box::pin(ready(Err(BookingError::SlotTaken)));
            }
            let now = act.now();
            let write = spawned(async move {
                let (_, _, bs, be) = msg.ty.block(msg.hold.start);
                if store.taken(msg.hold.clinician_id, bs, be, now).await? {
                    return Err(BookingError::SlotTaken);
                }
                store.hold(&msg.hold, &msg.ty, now).await
            });
            Box::pin(write.into_actor(act))
        });
        AtomicResponse::new(Box::pin(step.map(|res, act, _| {
            if let Ok(d) = &res {
                act.committed(&d.events);
            }
            res
        })))
    }
}

impl Handler<Reschedule> for Calendar {
    type Result = ResponseFuture<Result<Appointment, BookingError>>;

    fn handle(&mut self, msg: Reschedule, ctx: &mut Context<Self>) -> Self::Result {
        self.used = Instant::now();
        let (me, store, now, clinician) =
            (ctx.address(), self.deps.store.clone(), self.deps.now.clone(), self.clinician_id);
        Box::pin(async move {
            let ty = slot_type(store.as_ref(), clinician, msg.type_id, msg.start, &now).await?;
            let done =
                me.send(CommitMove { id: msg.id, by: msg.by, ty, start: msg.start }).await.map_err(stopped)??;
            Ok(done.appointment)
        })
    }
}

impl Handler<CommitMove> for Calendar {
    type Result = AtomicResponse<Self, Result<Done, BookingError>>;

    fn handle(&mut self, msg: CommitMove, _: &mut Context<Self>) -> Self::Result {
        let (store, now) = (self.deps.store.clone(), self.now());
        let write = spawned(async move { store.reschedule(msg.id, msg.by, &msg.ty, msg.start, now).await });
        AtomicResponse::new(Box::pin(write.into_actor(self).map(|res, act, _| {
            if let Ok(d) = &res {
                act.committed(&d.events);
            }
            res
        })))
    }
}

/// Applies a change committed beside the actor before its caller is answered (published
/// directly if the calendar stopped meanwhile).
async fn settle(me: &Addr<Calendar>, bus: &dyn EventBus, done: Done) -> Appointment {
    if !done.events.is_empty() && me.send(Committed(done.events.clone())).await.is_err() {
        bus.publish(done.events);
    }
    done.appointment
}

impl Handler<Committed> for Calendar {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        self.committed(&msg.0);
    }
}

/// A change beside the actor: `op` runs as its own task, its events are applied, the
/// appointment is answered.
fn beside<F>(
    cal: &mut Calendar,
    ctx: &mut Context<Calendar>,
    op: F,
) -> ResponseFuture<Result<Appointment, BookingError>>
where
    F: std::future::Future<Output = Result<Done, BookingError>> + Send + 'static,
{
    cal.used = Instant::now();
    let (me, bus) = (ctx.address(), cal.deps.bus.clone());
    Box::pin(async move {
        let done = spawned(op).await?;
        Ok(settle(&me, bus.as_ref(), done).await)
    })
}

impl Handler<Confirm> for Calendar {
    type Result = ResponseFuture<Result<Appointment, BookingError>>;

    fn handle(&mut self, msg: Confirm, ctx: &mut Context<Self>) -> Self::Result {
        let (store, now) = (self.deps.store.clone(), self.now());
        beside(self, ctx, async move { store.confirm(msg.id, now).await })
    }
}

impl Handler<Cancel> for Calendar {
    type Result = ResponseFuture<Result<Appointment, BookingError>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let (store, now) = (self.deps.store.clone(), self.now());
        beside(self, ctx, async move { store.cancel(msg.id, msg.by, &msg.reason, now).await })
    }
}

impl Handler<NoShow> for Calendar {
    type Result = ResponseFuture<Result<Appointment, BookingError>>;

    fn handle(&mut self, msg: NoShow, ctx: &mut Context<Self>) -> Self::Result {
        let (store, now) = (self.deps.store.clone(), self.now());
        beside(self, ctx, async move { store.no_show(msg.id, now).await })
    }
}

impl Handler<Apply> for Calendar {
    type Result = ();

    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) {
        if let Some(v) = self.view.as_mut() {
            for e in &msg.0 {
                v.apply(e);
            }
        }
    }
}

impl Handler<Invalidate> for Calendar {
    type Result = ();

    fn handle(&mut self, _: Invalidate, _: &mut Context<Self>) {
        self.view = None;
    }
}

/// This node's calendars, one per clinician booked here, started on first use.
pub struct Calendars {
    deps: CalendarDeps,
    map: Mutex<HashMap<Uuid, Addr<Calendar>>>,
}

impl Calendars {
    pub fn new(deps: CalendarDeps) -> Arc<Self> {
        Arc::new(Calendars { deps, map: Mutex::default() })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, Addr<Calendar>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running calendar of `clinician_id`, if any.
    pub fn get(&self, clinician_id: Uuid) -> Option<Addr<Calendar>> {
        self.map().get(&clinician_id).filter(|a| a.connected()).cloned()
    }

    /// The calendar of `clinician_id`, started (on the current arbiter) if none runs.
    pub fn calendar(self: &Arc<Self>, clinician_id: Uuid) -> Addr<Calendar> {
        let mut map = self.map();
        if let Some(a) = map.get(&clinician_id).filter(|a| a.connected()) {
            return a.clone();
        }
        let addr = Calendar {
            clinician_id,
            deps: self.deps.clone(),
            view: None,
            used: Instant::now(),
            registry: Arc::downgrade(self),
        }
        .start();
        map.insert(clinician_id, addr.clone());
        addr
    }

    fn forget(&self, clinician_id: Uuid, addr: &Addr<Calendar>) {
        let mut map = self.map();
        if map.get(&clinician_id) == Some(addr) {
            map.remove(&clinician_id);
        }
    }

    /// Sends `msg` to the clinician's calendar; one that stopped before taking it (idle) is
    /// started again and asked once more.
    async fn ask<M>(self: &Arc<Self>, clinician_id: Uuid, msg: M) -> Result<M::Result, BookingError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        Calendar: Handler<M>,
    {
        let addr = self.calendar(clinician_id);
        match addr.send(msg.clone()).await {
            Ok(r) => Ok(r),
            Err(_) if !addr.connected() => {
                self.forget(clinician_id, &addr);
                self.calendar(clinician_id).send(msg).await.map_err(stopped)
            }
            Err(e) => Err(stopped(e)),
        }
    }

    /// Holds (or books) a slot.
    pub async fn hold(self: &Arc<Self>, h: NewHold) -> Result<Held, BookingError> {
        self.ask(h.clinician_id, Hold(h)).await?
    }

    /// Confirms hold `id` in `clinician_id`'s calendar.
    pub async fn confirm(self: &Arc<Self>, clinician_id: Uuid, id: Uuid) -> Result<Appointment, BookingError> {
        self.ask(clinician_id, Confirm { id }).await?
    }

    /// Cancels appointment `id` in `clinician_id`'s calendar.
    pub async fn cancel(self: &Arc<Self>, clinician_id: Uuid, msg: Cancel) -> Result<Appointment, BookingError> {
        self.ask(clinician_id, msg).await?
    }

    /// Moves appointment `id` within `clinician_id`'s calendar.
    pub async fn reschedule(
        self: &Arc<Self>,
        clinician_id: Uuid,
        msg: Reschedule,
    ) -> Result<Appointment, BookingError> {
        self.ask(clinician_id, msg).await?
    }

    /// Marks appointment `id` in `clinician_id`'s calendar a no-show.
    pub async fn no_show(self: &Arc<Self>, clinician_id: Uuid, id: Uuid) -> Result<Appointment, BookingError> {
        self.ask(clinician_id, NoShow { id }).await?
    }

    /// What `clinician_id`'s view knows about an attempt (reloading it when stale).
    pub async fn check(
        self: &Arc<Self>,
        clinician_id: Uuid,
        type_id: Uuid,
        start: DateTime<Utc>,
    ) -> Result<Verdict, BookingError> {
        self.ask(clinician_id, Check { type_id, start }).await?
    }

    /// Applies changes committed elsewhere to the calendars running here (a calendar not
    /// running here has nothing to update).
    pub fn apply(&self, events: &[BookingEvent]) {
        let mut by: HashMap<Uuid, Vec<BookingEvent>> = HashMap::new();
        for e in events {
            by.entry(e.clinician_id).or_default().push(e.clone());
        }
        for (clinician, evs) in by {
            if let Some(a) = self.get(clinician) {
                a.do_send(Apply(evs));
            }
        }
    }

    /// Drops the view of `clinician_id` (their schedule or types changed on this node).
    pub fn invalidate(&self, clinician_id: Uuid) {
        if let Some(a) = self.get(clinician_id) {
            a.do_send(Invalidate);
        }
    }

    /// Expires lapsed holds and offers the freed time on; applies and publishes the changes.
    /// Answers how many holds expired.
    pub async fn sweep(&self) -> Result<usize, BookingError> {
        let events = self.deps.store.sweep((self.deps.now)()).await?;
        let expired = events.iter().filter(|e| e.kind == EventKind::Expired).count();
        if !events.is_empty() {
            self.apply(&events);
            self.deps.bus.publish(events);
        }
        Ok(expired)
    }

    /// How many calendars run on this node.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
