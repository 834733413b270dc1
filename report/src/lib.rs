//! PDF reports the Coherency server typesets itself (issue #24: the wound report), and the
//! pictures it draws for clinicians (a keyframe's depth as relief, `depth`; wound photos chosen
//! from a scan's colour frames and stripped of their metadata, `photo`). Data in,
//! bytes out: no storage, no clock, no I/O. The server decides what a report says (the words of
//! the verdict, the figures, the table's cells); this crate decides where it goes on the page.
//! krilla writes the PDF (fonts embedded and subset, text shaped); the faces are DejaVu Sans,
//! compiled in from `report/fonts/`, so a report renders alike on every machine.

mod chart;
pub mod depth;
mod doc;
pub mod jpeg_encode;
pub mod mesh;
pub mod photo;
mod wound;

pub use chart::{day_axis, nice_axis, Axis, ChartData, ChartLayout, ChartPoint};
pub use wound::{render, LatestMesh, Rendered, Row, Tone, Verdict, WoundReport};

/// Why a report was not produced.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    /// Typesetting failed (names the stage; never the data).
    #[error("the report could not be typeset ({0})")]
    Render(&'static str),
}
