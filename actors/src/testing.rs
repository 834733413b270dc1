//! In-memory implementations of the storage traits, with fault injection, for tests (here
//! and in the server) and for running the capture path without services.
//!
//! Each fake has a [`Faults`] handle: fail the next N calls, be "down" until told
//! otherwise, refuse permanently, panic, or add latency.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use coherency_protocol::ids::ScanId;
use sha2::{Digest, Sha256};

use crate::reconstruction::{
    FrameLocation, FrameReader, MeasureMethod, MeshFormat, MeshKeys, NewMeasurement, NewReconstruction, PhotoPick,
    ReconOutcome, ReconstructionDoc, ReconstructionSink, RecordedCard, StoredMesh,
};
use crate::store::{
    ChunkSpec, FrameCommit, FrameRow, FrameStore, QualityRecord, QualitySink, ScanIndex, ScanState, ScanStatus,
    StoreError, StoredChunk,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Faults to inject into a fake store.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    fail_next: AtomicU32,
    permanent_next: AtomicU32,
    panic_next: AtomicU32,
    latency_us: AtomicU64,
    injected: AtomicU64,
    calls: AtomicU64,
}

impl Faults {
    /// While down, every call fails with a transient error.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` calls fail with a transient error.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls fail with a permanent error.
    pub fn refuse_next(&self, n: u32) {
        self.permanent_next.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls panic.
    pub fn panic_next(&self, n: u32) {
        self.panic_next.store(n, Ordering::SeqCst);
    }

    /// Every call takes at least this long.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us.store(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// How many calls have failed (or panicked) because of an injected fault.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many calls were made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let latency = self.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if Self::take(&self.panic_next) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            panic!("injected store panic");
        }
        if self.down.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Transient("injected: store down".into()));
        }
        if Self::take(&self.fail_next) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Transient("injected: transient failure".into()));
        }
        if Self::take(&self.permanent_next) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Permanent("injected: permanent failure".into()));
        }
        Ok(())
    }
}

/// A blob store in memory.
#[derive(Debug, Default)]
pub struct MemFrameStore {
    /// Fault injection.
    pub faults: Faults,
    objects: Mutex<HashMap<String, Bytes>>,
    puts: AtomicU64,
}

impl MemFrameStore {
    /// An object's bytes.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        lock(&self.objects).get(key).cloned()
    }

    /// Number of objects.
    pub fn object_count(&self) -> usize {
        lock(&self.objects).len()
    }

    /// Number of successful writes (rewrites included).
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl FrameStore for MemFrameStore {
    async fn put_chunk(
        &self,
        spec: &ChunkSpec,
        bytes: Bytes,
        sha256: Option<[u8; 32]>,
    ) -> Result<StoredChunk, StoreError> {
        self.faults.check().await?;
        let key = spec.suggested_key();
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if sha256.is_some_and(|given| given != digest) {
            return Err(StoreError::Permanent(format!("chunk {key}: the given SHA-256 is not the bytes' digest")));
        }
        let stored = StoredChunk { key: key.clone(), sha256: digest, size: bytes.len() as u64 };
        lock(&self.objects).insert(key, bytes);
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(stored)
    }
}

#[derive(Debug, Default)]
struct IndexInner {
    scans: HashMap<ScanId, ScanState>,
    rows: BTreeMap<(ScanId, u64), (String, FrameRow)>,
    row_inserts: u64,
    violations: Vec<String>,
    statuses: HashMap<ScanId, Vec<ScanStatus>>,
    touches: u64,
    /// Scans [`ScanIndex::claim_stale`] hands out, last first.
    stale: Vec<ScanId>,
}

/// A scan index in memory. Checks the invariants the real one relies on and records
/// violations for tests to assert on.
#[derive(Debug, Default)]
pub struct MemScanIndex {
    /// Fault injection.
    pub faults: Faults,
    inner: Mutex<IndexInner>,
}

impl MemScanIndex {
    /// Registers a scan in `created` (what `POST /v1/scans` does).
    pub fn create_scan(&self, scan_id: ScanId) {
        lock(&self.inner).scans.insert(scan_id, ScanState { status: ScanStatus::Created, acked_seq: 0 });
    }

    /// Sets a scan's state directly (e.g. `failed`).
    pub fn put_state(&self, scan_id: ScanId, state: ScanState) {
        lock(&self.inner).scans.insert(scan_id, state);
    }

    /// A scan's state.
    pub fn state(&self, scan_id: ScanId) -> Option<ScanState> {
        lock(&self.inner).scans.get(&scan_id).copied()
    }

    /// Every status a scan was set to, in order.
    pub fn status_history(&self, scan_id: ScanId) -> Vec<ScanStatus> {
        lock(&self.inner).statuses.get(&scan_id).cloned().unwrap_or_default()
    }

    /// A scan's frame rows in seq order, with their chunk keys.
    pub fn frames(&self, scan_id: ScanId) -> Vec<(String, FrameRow)> {
        lock(&self.inner).rows.range((scan_id, 0)..=(scan_id, u64::MAX)).map(|(_, v)| v.clone()).collect()
    }

    /// Rows actually inserted (conflicts not counted).
    pub fn row_inserts(&self) -> u64 {
        lock(&self.inner).row_inserts
    }

    /// Marks a scan as left `processing` by a stopped node: the next
    /// [`ScanIndex::claim_stale`] hands it out.
    pub fn leave_stale(&self, scan_id: ScanId) {
        lock(&self.inner).stale.push(scan_id);
    }

    /// How often a processing scan was touched.
    pub fn touches(&self) -> u64 {
        lock(&self.inner).touches
    }

    /// Invariant violations seen (a commit that would leave a hole, rows out of order, …).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.inner).violations.clone()
    }
}

#[async_trait]
impl ScanIndex for MemScanIndex {
    async fn load_scan(&self, scan_id: ScanId) -> Result<ScanState, StoreError> {
        self.faults.check().await?;
        lock(&self.inner).scans.get(&scan_id).copied().ok_or_else(|| StoreError::Permanent("no such scan".into()))
    }

    async fn commit_frames(&self, commit: &FrameCommit) -> Result<(), StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        let Some(state) = inner.scans.get(&commit.scan_id).copied() else {
            return Err(StoreError::Permanent("no such scan".into()));
        };
        let first = commit.frames.first().map_or(0, |r| r.seq);
        let contiguous = commit.frames.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if first > state.acked_seq + 1 || !contiguous || commit.frames.last().map(|r| r.seq) != Some(commit.acked_seq) {
            let v = format!("commit {first}..={} with acked {}", commit.acked_seq, state.acked_seq);
            inner.violations.push(v);
        }
        for row in &commit.frames {
            let key = (commit.scan_id, row.seq);
            if let std::collections::btree_map::Entry::Vacant(e) = inner.rows.entry(key) {
                e.insert((commit.chunk.key.clone(), row.clone()));
                inner.row_inserts += 1;
            }
        }
        let status = if state.status == ScanStatus::Created { ScanStatus::Streaming } else { state.status };
        inner.scans.insert(commit.scan_id, ScanState { status, acked_seq: state.acked_seq.max(commit.acked_seq) });
        Ok(())
    }

    async fn set_status(&self, scan_id: ScanId, status: ScanStatus) -> Result<(), StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        let Some(state) = inner.scans.get_mut(&scan_id) else {
            return Err(StoreError::Permanent("no such scan".into()));
        };
        state.status = status;
        inner.statuses.entry(scan_id).or_default().push(status);
        Ok(())
    }

    async fn touch_processing(&self, _scan_id: ScanId) -> Result<(), StoreError> {
        self.faults.check().await?;
        lock(&self.inner).touches += 1;
        Ok(())
    }

    async fn claim_stale(&self, _stale: Duration) -> Result<Option<(ScanId, u64)>, StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        let found = inner.stale.pop();
        Ok(found.and_then(|id| inner.scans.get(&id).map(|s| (id, s.acked_seq))))
    }
}

/// A quality sink in memory.
#[derive(Debug, Default)]
pub struct MemQualitySink {
    /// Fault injection.
    pub faults: Faults,
    records: Mutex<BTreeMap<(ScanId, u64), (QualityRecord, u32)>>,
    /// The seqs of each successful write, in order.
    writes: Mutex<Vec<Vec<u64>>>,
}

impl MemQualitySink {
    /// A scan's records in seq order.
    pub fn records(&self, scan_id: ScanId) -> Vec<QualityRecord> {
        lock(&self.records).range((scan_id, 0)..=(scan_id, u64::MAX)).map(|(_, (r, _))| r.clone()).collect()
    }

    /// The seqs each successful write carried, in write order (every scan).
    pub fn writes(&self) -> Vec<Vec<u64>> {
        lock(&self.writes).clone()
    }

    /// How often each of a scan's records was written, by seq.
    pub fn write_counts(&self, scan_id: ScanId) -> BTreeMap<u64, u32> {
        lock(&self.records).range((scan_id, 0)..=(scan_id, u64::MAX)).map(|((_, s), (_, n))| (*s, *n)).collect()
    }
}

#[async_trait]
impl QualitySink for MemQualitySink {
    async fn write_quality(&self, records: &[QualityRecord]) -> Result<(), StoreError> {
        self.faults.check().await?;
        let mut map = lock(&self.records);
        for r in records {
            let e = map.entry((r.scan_id, r.seq)).or_insert_with(|| (r.clone(), 0));
            e.0 = r.clone();
            e.1 += 1;
        }
        lock(&self.writes).push(records.iter().map(|r| r.seq).collect());
        Ok(())
    }
}

/// Reads frames back from the in-memory stores the capture path wrote to.
pub struct MemFrameReader {
    /// Fault injection.
    pub faults: Faults,
    index: std::sync::Arc<MemScanIndex>,
    frames: std::sync::Arc<MemFrameStore>,
    quality: std::sync::Arc<MemQualitySink>,
}

impl MemFrameReader {
    /// A reader over the stores a capture session wrote to.
    pub fn new(
        index: std::sync::Arc<MemScanIndex>,
        frames: std::sync::Arc<MemFrameStore>,
        quality: std::sync::Arc<MemQualitySink>,
    ) -> Self {
        Self { faults: Faults::default(), index, frames, quality }
    }
}

#[async_trait]
impl FrameReader for MemFrameReader {
    async fn locate(&self, scan_id: ScanId) -> Result<Vec<FrameLocation>, StoreError> {
        self.faults.check().await?;
        Ok(self
            .index
            .frames(scan_id)
            .into_iter()
            .map(|(chunk_key, r)| FrameLocation { seq: r.seq, chunk_key, offset: r.offset, length: r.length })
            .collect())
    }

    async fn read_chunk(&self, key: &str) -> Result<Bytes, StoreError> {
        self.faults.check().await?;
        self.frames.get(key).ok_or_else(|| StoreError::Permanent("no such chunk".into()))
    }

    async fn quality_seqs(&self, scan_id: ScanId) -> Result<Vec<u64>, StoreError> {
        Ok(self.quality.records(scan_id).iter().map(|r| r.seq).collect())
    }
}

/// A stored measurement in [`MemReconstructionSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct MemMeasurement {
    /// Its id.
    pub id: uuid::Uuid,
    /// What was written.
    pub measurement: NewMeasurement,
    /// How often it was written (the automatic one is replaced in place).
    pub writes: u32,
}

#[derive(Debug, Default)]
struct SinkInner {
    meshes: BTreeMap<String, Bytes>,
    measurements: Vec<MemMeasurement>,
    documents: HashMap<ScanId, (ReconstructionDoc, u32)>,
    reconstructions: HashMap<ScanId, (NewReconstruction, u32)>,
    photos: HashMap<ScanId, PhotoPick>,
}

/// Where reconstructions store their results, in memory.
#[derive(Debug, Default)]
pub struct MemReconstructionSink {
    /// Fault injection (every write).
    pub faults: Faults,
    inner: Mutex<SinkInner>,
}

impl MemReconstructionSink {
    /// A scan's measurements, in write order.
    pub fn measurements(&self, scan_id: ScanId) -> Vec<MemMeasurement> {
        lock(&self.inner).measurements.iter().filter(|m| m.measurement.scan_id == scan_id).cloned().collect()
    }

    /// A scan's reconstruction document and how often it was written.
    pub fn document(&self, scan_id: ScanId) -> Option<(ReconstructionDoc, u32)> {
        lock(&self.inner).documents.get(&scan_id).cloned()
    }

    /// A scan's reconstruction outcome and how often it was written.
    pub fn reconstruction(&self, scan_id: ScanId) -> Option<(NewReconstruction, u32)> {
        lock(&self.inner).reconstructions.get(&scan_id).cloned()
    }

    /// A scan's photo choice as its finish stored it.
    pub fn photos(&self, scan_id: ScanId) -> Option<PhotoPick> {
        lock(&self.inner).photos.get(&scan_id).cloned()
    }

    /// The mesh stored at `key`.
    pub fn mesh(&self, key: &str) -> Option<Bytes> {
        lock(&self.inner).meshes.get(key).cloned()
    }
}

#[async_trait]
impl ReconstructionSink for MemReconstructionSink {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    async fn put_mesh(&self, scan_id: ScanId, format: MeshFormat, bytes: Bytes) -> Result<StoredMesh, StoreError> {
        self.faults.check().await?;
        let key = format!("scans/{scan_id}/mesh.{}", format.extension());
        let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let size = bytes.len() as u64;
        lock(&self.inner).meshes.insert(key.clone(), bytes);
        Ok(StoredMesh { key, sha256, size })
    }

    async fn write_measurement(&self, m: &NewMeasurement) -> Result<uuid::Uuid, StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        if m.method == MeasureMethod::Auto {
            let existing = inner
                .measurements
                .iter_mut()
                .find(|x| x.measurement.scan_id == m.scan_id && x.measurement.method == MeasureMethod::Auto);
            if let Some(x) = existing {
                x.measurement = m.clone();
                x.writes += 1;
                return Ok(x.id);
            }
        }
        let id = uuid::Uuid::now_v7();
        inner.measurements.push(MemMeasurement { id, measurement: m.clone(), writes: 1 });
        Ok(id)
    }

    async fn write_reconstruction(&self, r: &NewReconstruction) -> Result<(), StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        if matches!(r.outcome, ReconOutcome::NeedsOutline { .. }) {
            inner
                .measurements
                .retain(|m| !(m.measurement.scan_id == r.scan_id && m.measurement.method == MeasureMethod::Auto));
        }
        let e = inner.reconstructions.entry(r.scan_id).or_insert_with(|| (r.clone(), 0));
        e.0 = r.clone();
        e.1 += 1;
        Ok(())
    }

    async fn reconstruction_mesh(&self, scan_id: ScanId) -> Result<Option<MeshKeys>, StoreError> {
        Ok(lock(&self.inner).reconstructions.get(&scan_id).map(|(r, _)| r.mesh.clone()))
    }

    async fn write_photos(&self, scan_id: ScanId, pick: &PhotoPick) -> Result<(), StoreError> {
        self.faults.check().await?;
        lock(&self.inner).photos.insert(scan_id, pick.clone());
        Ok(())
    }

    async fn write_document(&self, scan_id: ScanId, doc: ReconstructionDoc) -> Result<(), StoreError> {
        self.faults.check().await?;
        let mut inner = lock(&self.inner);
        let e = inner.documents.entry(scan_id).or_insert_with(|| (doc.clone(), 0));
        e.0 = doc;
        e.1 += 1;
        Ok(())
    }

    async fn recorded_card(&self, scan_id: ScanId) -> Result<RecordedCard, StoreError> {
        self.faults.check().await?;
        Ok(lock(&self.inner)
            .documents
            .get(&scan_id)
            .map_or(RecordedCard::NotRecorded, |(d, _)| RecordedCard::of_document(&d.body)))
    }
}

// ---------------------------------------------------------------------------------------------
// Booking: an in-memory calendar store and event bus for the calendar actor's tests.

pub use booking_fakes::{FakeBookingStore, FakeEventBus};

mod booking_fakes {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, NaiveTime, Utc};
    use uuid::Uuid;

    use super::lock;
    use crate::calendar::{
        slots, Appointment, AppointmentType, BookingError, BookingEvent, BookingStore, Done, EventBus, EventKind,
        NewHold, Occupied, Schedule, Snapshot, HOLD_TTL, LIVE, MAX_ACTIVE_HOLDS,
    };

    #[derive(Default)]
    struct Calendar {
        schedules: Vec<Schedule>,
        types: Vec<AppointmentType>,
        rows: Vec<Appointment>,
    }

    /// Appointments in memory, with the exclusion constraint's rule (no two live rows of one
    /// clinician overlap) checked on every write. Counts its writes and calendar loads, so a
    /// test can tell an answer from the view from one from the store.
    #[derive(Default)]
    pub struct FakeBookingStore {
        cal: Mutex<Calendar>,
        writes: AtomicU64,
        loads: AtomicU64,
    }

    impl FakeBookingStore {
        /// A clinician open 08:00–18:00 UTC every day (no notice, 60-day horizon) and a
        /// 30-minute type without buffers.
        pub fn with_clinician(clinician_id: Uuid) -> (Self, AppointmentType) {
            let hm = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default();
            let schedule = Schedule {
                clinician_id,
                tz: chrono_tz::UTC,
                horizon_days: 60,
                min_notice_min: 0,
                rules: (1..=7).map(|weekday| slots::Rule { weekday, start: hm(8), end: hm(18) }).collect(),
                exceptions: Vec::new(),
            };
            let ty = AppointmentType {
                id: Uuid::now_v7(),
                clinician_id,
                name: "review".into(),
                duration_min: 30,
                buffer_before_min: 0,
                buffer_after_min: 0,
                modality: "telehealth".into(),
                active: true,
            };
            let store = FakeBookingStore::default();
            {
                let mut c = lock(&store.cal);
                c.schedules.push(schedule);
                c.types.push(ty.clone());
            }
            (store, ty)
        }

        /// Writes (hold, confirm, cancel, reschedule, no-show) that reached the store.
        pub fn writes(&self) -> u64 {
            self.writes.load(Ordering::SeqCst)
        }

        /// Calendar loads (view reloads).
        pub fn loads(&self) -> u64 {
            self.loads.load(Ordering::SeqCst)
        }

        /// Every appointment row.
        pub fn rows(&self) -> Vec<Appointment> {
            lock(&self.cal).rows.clone()
        }

        /// Books `ty` at `start` directly, as another node would: nothing on this node hears
        /// of it. Answers the event that node would publish.
        pub fn book_elsewhere(&self, ty: &AppointmentType, start: DateTime<Utc>, now: DateTime<Utc>) -> BookingEvent {
            let h = NewHold {
                clinician_id: ty.clinician_id,
                patient_id: Uuid::now_v7(),
                type_id: ty.id,
                start,
                confirm: true,
                created_by: Uuid::now_v7(),
                idempotency_key: None,
            };
            let a = row(&h, ty, now);
            lock(&self.cal).rows.push(a.clone());
            BookingEvent::of(EventKind::Booked, &a)
        }

        fn write(&self) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }

        fn change(
            &self,
            id: Uuid,
            now: DateTime<Utc>,
            f: impl FnOnce(&mut Appointment) -> Result<Option<EventKind>, BookingError>,
        ) -> Result<Done, BookingError> {
            self.write();
            let mut c = lock(&self.cal);
            let a = c.rows.iter_mut().find(|a| a.id == id).ok_or(BookingError::NotFound)?;
            let Some(kind) = f(a)? else { return Ok(Done { appointment: a.clone(), events: Vec::new() }) };
            a.version += 1;
            a.updated_at = now;
            Ok(Done { appointment: a.clone(), events: vec![BookingEvent::of(kind, a)] })
        }
    }

    fn live_at(a: &Appointment, now: DateTime<Utc>) -> bool {
        LIVE.contains(&a.status.as_str()) && !(a.status == "held" && a.expires_at.is_some_and(|e| e <= now))
    }

    fn row(h: &NewHold, ty: &AppointmentType, now: DateTime<Utc>) -> Appointment {
        let (start, end, bs, be) = ty.block(h.start);
        Appointment {
            id: Uuid::now_v7(),
            clinician_id: h.clinician_id,
            patient_id: h.patient_id,
            type_id: ty.id,
            modality: ty.modality.clone(),
            start_at: start,
            end_at: end,
            status: if h.confirm { "booked" } else { "held" }.into(),
            expires_at: (!h.confirm).then_some(now + HOLD_TTL),
            cancel_reason: None,
            rescheduled_from: None,
            waitlist_id: None,
            version: 1,
            created_at: now,
            updated_at: now,
            block_start: bs,
            block_end: be,
        }
    }

    #[async_trait]
    impl BookingStore for FakeBookingStore {
        async fn load_calendar(&self, clinician_id: Uuid, now: DateTime<Utc>) -> Result<Snapshot, BookingError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let c = lock(&self.cal);
            Ok(Snapshot {
                schedule: c.schedules.iter().find(|s| s.clinician_id == clinician_id).cloned(),
                types: c.types.iter().filter(|t| t.clinician_id == clinician_id && t.active).cloned().collect(),
                occupied: c
                    .rows
                    .iter()
                    .filter(|a| {
                        a.clinician_id == clinician_id && LIVE.contains(&a.status.as_str()) && a.block_end > now
                    })
                    .map(|a| Occupied {
                        appointment_id: a.id,
                        status: a.status.clone(),
                        block_start: a.block_start,
                        block_end: a.block_end,
                        expires_at: a.expires_at,
                        version: a.version,
                    })
                    .collect(),
            })
        }

        async fn load_schedule(&self, clinician_id: Uuid) -> Result<Option<Schedule>, BookingError> {
            Ok(lock(&self.cal).schedules.iter().find(|s| s.clinician_id == clinician_id).cloned())
        }

        async fn load_type(&self, type_id: Uuid) -> Result<Option<AppointmentType>, BookingError> {
            Ok(lock(&self.cal).types.iter().find(|t| t.id == type_id).cloned())
        }

        async fn taken(
            &self,
            clinician_id: Uuid,
            bs: DateTime<Utc>,
            be: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<bool, BookingError> {
            let c = lock(&self.cal);
            Ok(c.rows.iter().any(|a| a.clinician_id == clinician_id && live_at(a, now) && a.blocks(bs, be)))
        }

        async fn by_idempotency_key(&self, _: Uuid, _: &str) -> Result<Option<Appointment>, BookingError> {
            Ok(None)
        }

        async fn hold(&self, h: &NewHold, ty: &AppointmentType, now: DateTime<Utc>) -> Result<Done, BookingError> {
            self.write();
            let mut c = lock(&self.cal);
            let a = row(h, ty, now);
            let mut events = Vec::new();
            for o in
                c.rows.iter_mut().filter(|o| o.clinician_id == h.clinician_id && o.blocks(a.block_start, a.block_end))
            {
                if o.status == "held" && !live_at(o, now) {
                    o.status = "expired".into();
                    o.version += 1;
                    events.push(BookingEvent::of(EventKind::Expired, o));
                }
            }
            if c.rows
                .iter()
                .any(|o| o.clinician_id == h.clinician_id && live_at(o, now) && o.blocks(a.block_start, a.block_end))
            {
                return Err(BookingError::SlotTaken);
            }
            let holds =
                c.rows.iter().filter(|o| o.patient_id == h.patient_id && o.status == "held" && live_at(o, now)).count();
            if !h.confirm && holds as i64 >= MAX_ACTIVE_HOLDS {
                return Err(BookingError::TooManyHolds);
            }
            c.rows.push(a.clone());
            events.push(BookingEvent::of(if h.confirm { EventKind::Booked } else { EventKind::Held }, &a));
            Ok(Done { appointment: a, events })
        }

        async fn confirm(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done, BookingError> {
            self.change(id, now, |a| match a.status.as_str() {
                "booked" => Ok(None),
                "held" if live_at(a, now) => {
                    a.status = "booked".into();
                    a.expires_at = None;
                    Ok(Some(EventKind::Booked))
                }
                "held" | "expired" => Err(BookingError::HoldExpired),
                s => Err(BookingError::NotLive(s.into())),
            })
        }

        async fn cancel(&self, id: Uuid, _: Uuid, reason: &str, now: DateTime<Utc>) -> Result<Done, BookingError> {
            self.change(id, now, |a| match a.status.as_str() {
                "cancelled" => Ok(None),
                "held" | "booked" => {
                    a.status = "cancelled".into();
                    a.cancel_reason = Some(reason.into());
                    a.expires_at = None;
                    Ok(Some(EventKind::Cancelled))
                }
                s => Err(BookingError::NotLive(s.into())),
            })
        }

        async fn reschedule(
            &self,
            id: Uuid,
            by: Uuid,
            ty: &AppointmentType,
            start: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<Done, BookingError> {
            self.write();
            let mut c = lock(&self.cal);
            let cur = c.rows.iter().find(|a| a.id == id).cloned().ok_or(BookingError::NotFound)?;
            if !live_at(&cur, now) {
                return Err(BookingError::NotLive(cur.status));
            }
            let h = NewHold {
                clinician_id: cur.clinician_id,
                patient_id: cur.patient_id,
                type_id: ty.id,
                start,
                confirm: cur.status != "held",
                created_by: by,
                idempotency_key: None,
            };
            let mut new = row(&h, ty, now);
            new.rescheduled_from = Some(id);
            let clash = c.rows.iter().any(|o| {
                o.id != id
                    && o.clinician_id == cur.clinician_id
                    && live_at(o, now)
                    && o.blocks(new.block_start, new.block_end)
            });
            if clash {
                return Err(BookingError::SlotTaken);
            }
            if let Some(old) = c.rows.iter_mut().find(|a| a.id == id) {
                old.status = "cancelled".into();
                old.cancel_reason = Some("rescheduled".into());
                old.version += 1;
            }
            c.rows.push(new.clone());
            Ok(Done { events: vec![BookingEvent::of(EventKind::Rescheduled, &new)], appointment: new })
        }

        async fn no_show(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done, BookingError> {
            self.change(id, now, |a| match a.status.as_str() {
                "no_show" => Ok(None),
                "booked" if a.start_at <= now => {
                    a.status = "no_show".into();
                    Ok(Some(EventKind::NoShow))
                }
                "booked" => Err(BookingError::NotStarted),
                s => Err(BookingError::NotLive(s.into())),
            })
        }

        async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<BookingEvent>, BookingError> {
            let mut c = lock(&self.cal);
            let mut events = Vec::new();
            for a in c.rows.iter_mut().filter(|a| a.status == "held" && a.expires_at.is_some_and(|e| e <= now)) {
                a.status = "expired".into();
                a.version += 1;
                events.push(BookingEvent::of(EventKind::Expired, a));
            }
            Ok(events)
        }
    }

    /// Records what a calendar published, in order.
    #[derive(Default)]
    pub struct FakeEventBus {
        published: Mutex<Vec<BookingEvent>>,
    }

    impl FakeEventBus {
        /// The kinds published so far.
        pub fn kinds(&self) -> Vec<EventKind> {
            lock(&self.published).iter().map(|e| e.kind).collect()
        }
    }

    impl EventBus for FakeEventBus {
        fn publish(&self, events: Vec<BookingEvent>) {
            lock(&self.published).extend(events);
        }
    }
}
