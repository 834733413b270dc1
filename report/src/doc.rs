//! The few typesetting pieces a report needs, over krilla (which embeds and subsets the fonts
//! and shapes the text): measured text, greedy line breaking, lines, fills and images on an A4
//! page whose origin is the top-left corner, y growing down, in points.

use std::sync::LazyLock;

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Size};
use krilla::image::Image;
use krilla::num::NormalizedF32;
use krilla::paint::{Fill, Stroke, StrokeDash};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use skrifa::instance::{LocationRef, Size as FontSize};
use skrifa::{FontRef, MetadataProvider};

/// A4 in points.
pub const PAGE_W: f32 = 595.0;
pub const PAGE_H: f32 = 842.0;
pub const MARGIN: f32 = 48.0;

static REGULAR_TTF: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static BOLD_TTF: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

/// The two faces a report sets text in.
pub struct Fonts {
    regular: (Font, FontRef<'static>),
    bold: (Font, FontRef<'static>),
}

static FONTS: LazyLock<Option<Fonts>> = LazyLock::new(|| {
    let face = |ttf: &'static [u8]| Some((Font::new(ttf.into(), 0)?, FontRef::new(ttf).ok()?));
    Some(Fonts { regular: face(REGULAR_TTF)?, bold: face(BOLD_TTF)? })
});

/// The compiled-in fonts (`None` only if the font files were damaged at build time).
pub fn fonts() -> Option<&'static Fonts> {
    FONTS.as_ref()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Regular,
    Bold,
}

impl Fonts {
    fn face(&self, w: Weight) -> &(Font, FontRef<'static>) {
        match w {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        }
    }

    /// The advance width of `text` at `size` points (no kerning: a hair wider than set).
    pub fn width(&self, text: &str, size: f32, w: Weight) -> f32 {
        let f = &self.face(w).1;
        let map = f.charmap();
        let metrics = f.glyph_metrics(FontSize::new(size), LocationRef::default());
        text.chars().map(|c| map.map(c).and_then(|g| metrics.advance_width(g)).unwrap_or(size * 0.6)).sum()
    }

    /// `text` broken into lines no wider than `max` (greedy, at spaces; a word wider than a
    /// line is cut).
    pub fn wrap(&self, text: &str, size: f32, w: Weight, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split_whitespace() {
            let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
            if self.width(&candidate, size, w) <= max {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let mut rest = word.to_string();
            while self.width(&rest, size, w) > max {
                let mut cut = String::new();
                for c in rest.chars() {
                    if self.width(&format!("{cut}{c}"), size, w) > max && !cut.is_empty() {
                        break;
                    }
                    cut.push(c);
                }
                rest = rest[cut.len()..].to_string();
                lines.push(cut);
            }
            line = rest;
        }
        if !line.is_empty() {
            lines.push(line);
        }
        lines
    }
}

pub const INK: (u8, u8, u8) = (20, 24, 31);
pub const MUTED: (u8, u8, u8) = (95, 104, 117);
pub const RULE: (u8, u8, u8) = (200, 205, 212);

fn colour(c: (u8, u8, u8)) -> rgb::Color {
    rgb::Color::new(c.0, c.1, c.2)
}

/// How text sits on its x.
#[derive(Debug, Clone, Copy)]
pub enum Align {
    Left,
    Right,
    Centre,
}

/// The path through `pts` (closed back to the first when `close`); `None` for no points.
fn path_through(pts: &[(f32, f32)], close: bool) -> Option<krilla::geom::Path> {
    let mut pb = PathBuilder::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        if i == 0 {
            pb.move_to(*x, *y);
        } else {
            pb.line_to(*x, *y);
        }
    }
    if close {
        pb.close();
    }
    pb.finish()
}

/// A text style: size in points, weight, colour.
#[derive(Debug, Clone, Copy)]
pub struct Style(pub f32, pub Weight, pub (u8, u8, u8));

/// Drawing on one page.
pub struct Canvas<'a, 'b> {
    pub surface: &'a mut Surface<'b>,
    pub fonts: &'static Fonts,
}

impl Canvas<'_, '_> {
    /// `text` with its baseline at `y`.
    pub fn text(&mut self, x: f32, y: f32, style: Style, align: Align, text: &str) {
        let Style(size, w, c) = style;
        let width = self.fonts.width(text, size, w);
        let x = match align {
            Align::Left => x,
            Align::Right => x - width,
            Align::Centre => x - width / 2.0,
        };
        self.surface.set_fill(Some(Fill { paint: colour(c).into(), ..Fill::default() }));
        self.surface.draw_text(
            Point::from_xy(x, y),
            self.fonts.face(w).0.clone(),
            size,
            text,
            false,
            TextDirection::Auto,
        );
    }

    /// Lines of text from baseline `y`, `leading` apart; returns the baseline after the last.
    pub fn lines(&mut self, x: f32, mut y: f32, style: Style, leading: f32, lines: &[String]) -> f32 {
        for l in lines {
            self.text(x, y, style, Align::Left, l);
            y += leading;
        }
        y
    }

    /// An open polyline.
    pub fn polyline(&mut self, pts: &[(f32, f32)], width: f32, c: (u8, u8, u8), dash: Option<&[f32]>) {
        let Some(path) = path_through(pts, false) else { return };
        self.surface.set_fill(None);
        self.surface.set_stroke(Some(Stroke {
            paint: colour(c).into(),
            width,
            dash: dash.map(|d| StrokeDash { array: d.to_vec(), offset: 0.0 }),
            ..Stroke::default()
        }));
        self.surface.draw_path(&path);
        self.surface.set_stroke(None);
    }

    /// A filled polygon at `opacity`.
    pub fn polygon(&mut self, pts: &[(f32, f32)], c: (u8, u8, u8), opacity: f32) {
        let Some(path) = path_through(pts, true) else { return };
        self.surface.set_stroke(None);
        self.surface.set_fill(Some(Fill {
            paint: colour(c).into(),
            opacity: NormalizedF32::new(opacity.clamp(0.0, 1.0)).unwrap_or(NormalizedF32::ONE),
            ..Fill::default()
        }));
        self.surface.draw_path(&path);
    }

    /// A marker: a filled (or hollow) square-ish diamond of half-size `r` centred on `(x, y)`.
    pub fn marker(&mut self, x: f32, y: f32, r: f32, c: (u8, u8, u8), hollow: bool) {
        let pts = [(x, y - r), (x + r, y), (x, y + r), (x - r, y), (x, y - r)];
        if hollow {
            self.polyline(&pts, 0.8, c, None);
        } else {
            self.polygon(&pts[..4], c, 1.0);
        }
    }

    /// An RGBA picture of `pixels` (width, height) scaled into `size` points at `at`.
    pub fn image(&mut self, at: (f32, f32), size: (f32, f32), rgba: Vec<u8>, pixels: (u32, u32)) {
        let Some(size) = Size::from_wh(size.0, size.1) else { return };
        self.surface.push_transform(&krilla::geom::Transform::from_translate(at.0, at.1));
        self.surface.draw_image(Image::from_rgba8(rgba, pixels.0, pixels.1), size);
        self.surface.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_and_broken_into_lines_that_fit() {
        let f = fonts().expect("compiled-in fonts");
        let one = f.width("M", 10.0, Weight::Regular);
        assert!((5.0..12.0).contains(&one), "{one}");
        assert!(f.width("MM", 10.0, Weight::Regular) > 1.9 * one);
        assert!(f.width("Wound", 10.0, Weight::Bold) > f.width("Wound", 10.0, Weight::Regular));
        let text = "The area trend does not reach zero: the wound is not closing at its current rate.";
        let lines = f.wrap(text, 10.0, Weight::Regular, 150.0);
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(lines.iter().all(|l| f.width(l, 10.0, Weight::Regular) <= 150.0), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        let long = f.wrap("Pneumonoultramicroscopicsilicovolcanoconiosis", 10.0, Weight::Regular, 60.0);
        assert!(long.len() > 2 && long.iter().all(|l| f.width(l, 10.0, Weight::Regular) <= 60.0), "{long:?}");
    }
}
