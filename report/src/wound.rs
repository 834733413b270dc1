//! The wound report's pages: who and which wound, the verdict and the figures behind it, the
//! trajectory chart, the latest mesh with a scale bar, and every assessment in a table that
//! runs over as many pages as it needs (its header repeated), each page numbered "page i of n".

use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::Document;

use super::chart::{self, ChartData, ChartLayout};
use super::doc::{fonts, Align, Canvas, Fonts, Style, Weight, INK, MARGIN, MUTED, PAGE_H, PAGE_W, RULE};
use super::mesh::{self, Picture};
use super::ReportError;

/// How the verdict reads: good news, bad news, or neither yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Neutral,
}

/// The healing verdict, in words.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub tone: Tone,
    pub text: String,
}

/// One assessment's line in the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Date, day, method, area, volume, max depth, area against the baseline, counted as.
    pub cells: [String; 8],
    /// Printed under the row (an exclusion's reason).
    pub note: Option<String>,
    /// Not counted in the metrics: printed grey.
    pub muted: bool,
}

/// The latest scan's mesh as stored (binary glTF), and what to call it.
#[derive(Debug, Clone)]
pub struct LatestMesh {
    pub glb: Vec<u8>,
    /// `2026-12-01` (the scan's day).
    pub taken: String,
}

/// Everything the wound report shows, already in words.
#[derive(Debug, Clone)]
pub struct WoundReport {
    /// `2026-12-07 09:12 UTC`.
    pub generated: String,
    /// Label and value pairs: name, birth date, sex, record number.
    pub patient: Vec<(String, String)>,
    /// Label and value pairs: site, type, stage, onset, status, id.
    pub wound: Vec<(String, String)>,
    pub verdict: Verdict,
    /// Sentences under the verdict (projection, reductions, rates).
    pub figures: Vec<String>,
    pub chart: ChartData,
    /// In time order.
    pub rows: Vec<Row>,
    pub mesh: Option<LatestMesh>,
}

/// The PDF and where things landed (for tests and figures).
#[derive(Debug, Default)]
pub struct Rendered {
    pub pdf: Vec<u8>,
    pub pages: usize,
    pub chart: ChartLayout,
    /// The mesh picture was drawn (a mesh was given and read).
    pub mesh_drawn: bool,
}

const GREEN: (u8, u8, u8) = (20, 120, 60);
const RED: (u8, u8, u8) = (176, 32, 32);
const TABLE_SIZE: f32 = 7.5;
const ROW: f32 = 12.5;
const FOOTER_Y: f32 = PAGE_H - 28.0;
const BODY_BOTTOM: f32 = PAGE_H - 44.0;
const MESH_PX: u32 = 600;
const HEADERS: [&str; 8] =
    ["Date", "Day", "Method", "Area mm²", "Volume mm³", "Max depth mm", "Area change %", "Counted as"];
/// Space between two columns' contents.
const GUTTER: f32 = 8.0;
const NOTE_LEADING: f32 = TABLE_SIZE + 2.0;
/// Where the table continues on later pages (below its title when it starts there).
const NEXT_TOP: f32 = MARGIN + 14.0;

/// A row with its note broken into lines.
struct Laid<'a> {
    row: &'a Row,
    note: Vec<String>,
}

impl Laid<'_> {
    fn height(&self) -> f32 {
        ROW + self.note.len() as f32 * NOTE_LEADING
    }
}

/// The columns' left edges (and the right edge last), in points from the margin: each column
/// as wide as its widest header or cell plus a gutter, the room left over shared in proportion.
fn columns(rows: &[Row], f: &Fonts, width: f32) -> [f32; 9] {
    let mut need = [0f32; 8];
    for (k, h) in HEADERS.iter().enumerate() {
        need[k] = f.width(h, TABLE_SIZE, Weight::Bold);
    }
    for r in rows {
        for (k, c) in r.cells.iter().enumerate() {
            need[k] = need[k].max(f.width(c, TABLE_SIZE, Weight::Regular));
        }
    }
    let need = need.map(|n| n + GUTTER);
    let total: f32 = need.iter().sum();
    let scale = width / total;
    let mut edges = [0f32; 9];
    for k in 0..8 {
        edges[k + 1] = edges[k] + need[k] * scale;
    }
    edges
}

fn lay_rows<'a>(rows: &'a [Row], f: &Fonts, note_width: f32) -> Vec<Laid<'a>> {
    rows.iter()
        .map(|row| Laid {
            row,
            note: row.note.as_ref().map(|n| f.wrap(n, TABLE_SIZE, Weight::Regular, note_width)).unwrap_or_default(),
        })
        .collect()
}

/// Splits the rows into pages: the first page's table starts at `first_top`, the others' at
/// [`NEXT_TOP`]. Page 1 may hold none (its fixed part left no room); a later page always takes at
/// least one row.
fn paginate(rows: &[Laid], first_top: f32) -> Vec<std::ops::Range<usize>> {
    let mut pages = Vec::new();
    let mut start = 0;
    let mut y = first_top + ROW;
    for (i, r) in rows.iter().enumerate() {
        if y + r.height() > BODY_BOTTOM && (i > start || pages.is_empty()) {
            pages.push(start..i);
            start = i;
            y = NEXT_TOP + ROW;
        }
        y += r.height();
    }
    pages.push(start..rows.len());
    pages
}

fn table(c: &mut Canvas, rows: &[Laid], edges: &[f32; 9], top: f32) {
    let width = PAGE_W - 2.0 * MARGIN;
    let col = |k: usize| MARGIN + edges[k];
    let numeric = |k: usize| (1..=6).contains(&k);
    let cell = |c: &mut Canvas, k: usize, y: f32, w: Weight, ink, text: &str| {
        if numeric(k) {
            c.text(col(k + 1) - GUTTER, y, Style(TABLE_SIZE, w, ink), Align::Right, text);
        } else {
            c.text(col(k), y, Style(TABLE_SIZE, w, ink), Align::Left, text);
        }
    };
    for (k, h) in HEADERS.iter().enumerate() {
        cell(c, k, top + 9.0, Weight::Bold, INK, h);
    }
    c.polyline(&[(MARGIN, top + ROW - 1.0), (MARGIN + width, top + ROW - 1.0)], 0.6, INK, None);
    let mut y = top + ROW;
    for r in rows {
        let base = y + 9.0;
        let ink = if r.row.muted { MUTED } else { INK };
        for (k, text) in r.row.cells.iter().enumerate() {
            cell(c, k, base, Weight::Regular, ink, text);
        }
        c.lines(col(1), base + NOTE_LEADING, Style(TABLE_SIZE, Weight::Regular, MUTED), NOTE_LEADING, &r.note);
        y += r.height();
        c.polyline(&[(MARGIN, y - 1.0), (MARGIN + width, y - 1.0)], 0.25, RULE, None);
    }
}

fn footer(c: &mut Canvas, page: usize, pages: usize) {
    c.polyline(&[(MARGIN, FOOTER_Y - 10.0), (PAGE_W - MARGIN, FOOTER_Y - 10.0)], 0.4, RULE, None);
    c.text(
        MARGIN,
        FOOTER_Y,
        Style(7.0, Weight::Regular, MUTED),
        Align::Left,
        "Coherency wound report · confidential: contains health information",
    );
    c.text(
        PAGE_W - MARGIN,
        FOOTER_Y,
        Style(7.0, Weight::Regular, MUTED),
        Align::Right,
        &format!("page {page} of {pages}"),
    );
}

const FACTS_TOP: f32 = MARGIN + 38.0;
const FACT_LEADING: f32 = 10.5;
const LABEL_W: f32 = 62.0;

/// `label  value` pairs under a title, the values broken into lines `width` wide.
fn lay_facts(f: &Fonts, pairs: &[(String, String)], width: f32) -> Vec<(String, Vec<String>)> {
    pairs.iter().map(|(l, v)| (l.clone(), f.wrap(v, 8.0, Weight::Regular, width - LABEL_W))).collect()
}

fn facts_height(facts: &[(String, Vec<String>)]) -> f32 {
    13.0 + facts.iter().map(|(_, lines)| lines.len().max(1) as f32 * FACT_LEADING).sum::<f32>()
}

fn facts(c: &mut Canvas, x: f32, mut y: f32, title: &str, facts: &[(String, Vec<String>)]) {
    c.text(x, y, Style(9.0, Weight::Bold, INK), Align::Left, title);
    y += 13.0;
    for (label, lines) in facts {
        c.text(x, y, Style(8.0, Weight::Regular, MUTED), Align::Left, label);
        y = c.lines(x + LABEL_W, y, Style(8.0, Weight::Regular, INK), FACT_LEADING, lines).max(y + FACT_LEADING);
    }
}

/// Page 1's flow, measured before anything is drawn: the text above the chart sets where the
/// chart, the mesh and the table begin, so the table's pages are known up front.
struct FirstPage {
    patient: Vec<(String, Vec<String>)>,
    wound: Vec<(String, Vec<String>)>,
    verdict: Vec<String>,
    figures: Vec<Vec<String>>,
    verdict_top: f32,
    chart_top: f32,
    mesh_top: f32,
    table_top: f32,
}

const CHART_H: f32 = 180.0;
const MESH_SIZE: f32 = 150.0;
const VERDICT_LEADING: f32 = 12.0;
const FIGURE_LEADING: f32 = 11.0;

fn first_page_layout(r: &WoundReport, f: &Fonts) -> FirstPage {
    let width = PAGE_W - 2.0 * MARGIN;
    let half = width / 2.0 - 8.0;
    let patient = lay_facts(f, &r.patient, half);
    let wound = lay_facts(f, &r.wound, half);
    let verdict_top = FACTS_TOP + facts_height(&patient).max(facts_height(&wound)) + 8.0;
    let verdict = f.wrap(&r.verdict.text, 9.5, Weight::Bold, width);
    let figures: Vec<Vec<String>> = r.figures.iter().map(|t| f.wrap(t, 8.5, Weight::Regular, width)).collect();
    let text_end = verdict_top
        + verdict.len() as f32 * VERDICT_LEADING
        + figures.iter().map(|l| l.len() as f32 * FIGURE_LEADING).sum::<f32>();
    let chart_top = text_end + 20.0;
    let mesh_top = chart_top + CHART_H + 24.0;
    let table_top = mesh_top + 12.0 + MESH_SIZE + 22.0;
    FirstPage { patient, wound, verdict, figures, verdict_top, chart_top, mesh_top, table_top }
}

/// Typesets the report.
pub fn render(r: &WoundReport) -> Result<Rendered, ReportError> {
    let f = fonts().ok_or(ReportError::Render("fonts"))?;
    let width = PAGE_W - 2.0 * MARGIN;
    let mut doc = Document::new();
    doc.set_metadata(Metadata::new().title("Wound report".into()).creator("Coherency".into()).language("en".into()));
    let picture = r.mesh.as_ref().and_then(|m| {
        let mesh = mesh::read_glb(&m.glb).ok()?;
        mesh::render(&mesh, MESH_PX, MESH_PX, 12).ok().map(|p| (p, m.taken.as_str()))
    });
    let edges = columns(&r.rows, f, width);
    let rows = lay_rows(&r.rows, f, width - edges[1]);
    let first = first_page_layout(r, f);
    let pages = paginate(&rows, first.table_top);
    let total = pages.len();
    let mut out = Rendered { pages: total, ..Rendered::default() };
    for (i, range) in pages.iter().enumerate() {
        let mut page =
            doc.start_page_with(PageSettings::from_wh(PAGE_W, PAGE_H).ok_or(ReportError::Render("page size"))?);
        let mut surface = page.surface();
        let mut c = Canvas { surface: &mut surface, fonts: f };
        if i == 0 {
            first_page(&mut c, r, &first, &mut out, picture.as_ref());
        }
        // The table's title goes where the table starts.
        let starts_here = range.start == 0 && (i == 0 || pages[0].is_empty());
        let top = if i == 0 { first.table_top } else { NEXT_TOP };
        if starts_here {
            let title = format!("Assessments ({})", r.rows.len());
            c.text(MARGIN, top - 6.0, Style(9.0, Weight::Bold, INK), Align::Left, &title);
        }
        if r.rows.is_empty() {
            c.text(
                MARGIN,
                top + 12.0,
                Style(8.0, Weight::Regular, MUTED),
                Align::Left,
                "No measurement of this wound yet.",
            );
        } else if !range.is_empty() {
            table(&mut c, &rows[range.clone()], &edges, top);
        }
        footer(&mut c, i + 1, total);
        surface.finish();
        page.finish();
    }
    out.pdf = doc.finish().map_err(|_| ReportError::Render("pdf"))?;
    Ok(out)
}

fn first_page(
    c: &mut Canvas,
    r: &WoundReport,
    first: &FirstPage,
    out: &mut Rendered,
    picture: Option<&(Picture, &str)>,
) {
    let width = PAGE_W - 2.0 * MARGIN;
    c.text(MARGIN, MARGIN + 12.0, Style(17.0, Weight::Bold, INK), Align::Left, "Wound report");
    c.text(
        PAGE_W - MARGIN,
        MARGIN + 12.0,
        Style(8.0, Weight::Regular, MUTED),
        Align::Right,
        &format!("generated {}", r.generated),
    );
    c.polyline(&[(MARGIN, MARGIN + 20.0), (PAGE_W - MARGIN, MARGIN + 20.0)], 0.8, INK, None);
    facts(c, MARGIN, FACTS_TOP, "Patient", &first.patient);
    facts(c, MARGIN + width / 2.0 + 8.0, FACTS_TOP, "Wound", &first.wound);
    let colour = match r.verdict.tone {
        Tone::Good => GREEN,
        Tone::Bad => RED,
        Tone::Neutral => MUTED,
    };
    let mut y = c.lines(MARGIN, first.verdict_top, Style(9.5, Weight::Bold, colour), VERDICT_LEADING, &first.verdict);
    for lines in &first.figures {
        y = c.lines(MARGIN, y, Style(8.5, Weight::Regular, INK), FIGURE_LEADING, lines);
    }

    c.text(MARGIN, first.chart_top - 4.0, Style(9.0, Weight::Bold, INK), Align::Left, "Area over time");
    out.chart = chart::draw(c, &r.chart, MARGIN, first.chart_top, width, CHART_H);
    let key = "Band: the measurement ± of counted assessments. Dashed amber: the four-week target. Dashed blue: the linear trend; bracket: the earliest to latest closure. Hollow: not counted.";
    let lines = c.fonts.wrap(key, 6.5, Weight::Regular, width);
    c.lines(MARGIN, first.chart_top + CHART_H + 4.0, Style(6.5, Weight::Regular, MUTED), 8.0, &lines);

    c.text(MARGIN, first.mesh_top + 6.0, Style(9.0, Weight::Bold, INK), Align::Left, "Latest scan");
    let img_top = first.mesh_top + 12.0;
    let size = MESH_SIZE;
    match picture {
        Some((pic, taken)) => {
            c.image((MARGIN, img_top), (size, size), pic.rgba.clone(), (pic.width, pic.height));
            let pt_per_mm = size / (pic.width as f32 * pic.mm_per_px as f32);
            let bar = 10.0 * pt_per_mm;
            let (bx, by) = (MARGIN + 8.0, img_top + size - 8.0);
            c.polyline(&[(bx, by - 3.0), (bx, by), (bx + bar, by), (bx + bar, by - 3.0)], 1.2, INK, None);
            c.text(bx + bar + 4.0, by, Style(7.0, Weight::Regular, INK), Align::Left, "10 mm");
            let note = format!(
                "Scan of {taken}, seen from outside the skin. Red: deeper than {:.1} mm below the surrounding skin.",
                mesh::WOUND_LEVEL_M * 1000.0
            );
            let lines = c.fonts.wrap(&note, 8.0, Weight::Regular, width - size - 16.0);
            c.lines(MARGIN + size + 16.0, img_top + 10.0, Style(8.0, Weight::Regular, MUTED), 10.5, &lines);
            out.mesh_drawn = true;
        }
        None => {
            c.text(
                MARGIN,
                img_top + 14.0,
                Style(8.0, Weight::Regular, MUTED),
                Align::Left,
                "No reconstructed mesh of this wound.",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: usize) -> WoundReport {
        WoundReport {
            generated: "2026-12-07 09:00 UTC".into(),
            patient: vec![("Name".into(), "Ada Example".into())],
            wound: vec![("Site".into(), "Sacrum".into())],
            verdict: Verdict { tone: Tone::Bad, text: "Not on track.".into() },
            figures: vec!["Not closing.".into()],
            chart: ChartData::default(),
            rows: (0..rows)
                .map(|i| Row {
                    cells: std::array::from_fn(|k| format!("{i}.{k}")),
                    note: (i % 7 == 3).then(|| "Excluded: the dressing hid part of the edge in this scan, so the outline is short of the rim.".into()),
                    muted: i % 7 == 3,
                })
                .collect(),
            mesh: None,
        }
    }

    /// The widest header or cell of each column keeps clear of its neighbours, even with a
    /// large wound's five-digit figures.
    #[test]
    fn table_columns_hold_their_widest_content() {
        let f = fonts().unwrap();
        let width = PAGE_W - 2.0 * MARGIN;
        let widest = [
            "2026-12-31",
            "1234",
            "automatic",
            "12345.6 ± 1234.5",
            "123456 ± 12345",
            "12.34 ± 1.23",
            "+100.0 ± 12.3",
            "before baseline",
        ];
        let rows = [Row { cells: widest.map(String::from), note: None, muted: false }];
        let edges = columns(&rows, f, width);
        assert!((edges[8] - width).abs() < 0.01);
        for k in 0..8 {
            let room = edges[k + 1] - edges[k] - GUTTER;
            for (text, w) in [(HEADERS[k], Weight::Bold), (widest[k], Weight::Regular)] {
                let used = f.width(text, TABLE_SIZE, w);
                assert!(used <= room + 0.01, "column {k}: {text:?} is {used} wide in {room}");
            }
        }
    }

    #[test]
    fn a_long_history_runs_onto_numbered_pages_and_none_overflows() {
        let f = fonts().unwrap();
        for n in [0, 5, 14, 50, 200] {
            let r = report(n);
            let laid = lay_rows(&r.rows, f, PAGE_W - 2.0 * MARGIN);
            let first = first_page_layout(&r, f).table_top;
            let pages = paginate(&laid, first);
            assert_eq!(pages.iter().map(|p| p.len()).sum::<usize>(), n);
            for (i, p) in pages.iter().enumerate() {
                let top = if i == 0 { first } else { NEXT_TOP };
                let bottom = top + ROW + laid[p.clone()].iter().map(Laid::height).sum::<f32>();
                assert!(bottom <= BODY_BOTTOM, "{n} rows: page {i} ends at {bottom}");
                assert!(!p.is_empty() || n == 0 || i == 0);
            }
            let out = render(&r).unwrap();
            assert_eq!(out.pages, pages.len());
            assert!(out.pdf.starts_with(b"%PDF-"), "{n}");
        }
    }

    #[test]
    fn page_one_text_pushes_the_chart_and_table_down_never_under_them() {
        let f = fonts().unwrap();
        let short = first_page_layout(&report(3), f);
        let mut long = report(3);
        long.figures = (0..12)
            .map(|i| format!("Figure {i}: a sentence long enough to need its own line in the summary."))
            .collect();
        long.wound.push(("Note".into(), "word ".repeat(80)));
        let l = first_page_layout(&long, f);
        assert!(l.chart_top > short.chart_top + 12.0 * 11.0, "{} vs {}", l.chart_top, short.chart_top);
        assert!(l.table_top > l.mesh_top + MESH_SIZE && l.mesh_top > l.chart_top + CHART_H);
        // The table then starts on page 2, under its title.
        let laid = lay_rows(&long.rows, f, PAGE_W - 2.0 * MARGIN);
        let pages = paginate(&laid, l.table_top);
        if l.table_top + ROW + laid[0].height() > BODY_BOTTOM {
            assert!(pages[0].is_empty() && pages[1].len() == 3, "{pages:?}");
        }
        assert!(render(&long).unwrap().pages >= 2);
    }
}
