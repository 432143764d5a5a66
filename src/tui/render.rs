//! Headless frames: the same app drawn into a buffer, printed as text, ANSI or SVG. Used by
//! `vdiskview render`, the tests and the screenshot script.

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

use super::jobs::Inline;
use super::keymap::parse_keys;
use super::state::AppState;
use super::update::{handle_key, update};
use super::{draw::draw, action::Action};
use crate::image::Image;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Ansi,
    Svg,
}

/// Draw the app at `cols`x`rows` after feeding `keys`; returns the final buffer.
pub fn frame(img: &mut Image, cols: u16, rows: u16, keys: &str, goto: Option<&str>, no_color: bool) -> anyhow::Result<Buffer> {
    frame_with(img, cols, rows, keys, goto, no_color, None)
}

/// [`frame`] comparing the image with the other side of `diff` (marks after the diff job).
pub fn frame_with(
    img: &mut Image,
    cols: u16,
    rows: u16,
    keys: &str,
    goto: Option<&str>,
    no_color: bool,
    diff: Option<&super::compare::DiffSpec>,
) -> anyhow::Result<Buffer> {
    let mut st = AppState::new(img, (cols, rows));
    super::marks::attach_env(&mut st);
    st.no_color = st.no_color || no_color;
    update(&mut st, img, Action::Resize(cols, rows));
    if let Some(g) = goto {
        super::goto(&mut st, img, g)?;
    }
    // jobs run in place, so the frame shows their results as a terminal would once they end
    let mut jobs = Inline::new();
    let path = img.layers[0].name.clone();
    let mut effects = super::update::start_up(&mut st);
    if let Some(spec) = diff {
        effects.extend(super::begin_diff(&mut st, &path, spec)?);
    }
    settle(&mut st, img, &path, &mut jobs, effects);
    for k in parse_keys(keys) {
        if st.quit {
            break;
        }
        let effects = handle_key(&mut st, img, k);
        settle(&mut st, img, &path, &mut jobs, effects);
        super::update::apply_save(&mut st, img);
    }
    super::view::refresh(&mut st, img);
    let mut term = Terminal::new(TestBackend::new(cols, rows))?;
    term.draw(|f| draw(f, &st, img))?;
    Ok(term.backend().buffer().clone())
}

/// Run `effects` and feed their results back until no job is left.
pub fn settle(st: &mut AppState, img: &Image, path: &str, jobs: &mut Inline, effects: Vec<super::jobs::Effect>) {
    let mut effects = effects;
    loop {
        jobs.run(img, path, effects);
        let done = jobs.take();
        if done.is_empty() {
            return;
        }
        effects = Vec::new();
        for a in done {
            effects.extend(update(st, img, a));
        }
    }
}

pub fn to_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        let mut skip = 0;
        for x in 0..area.width {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let s = buf[(x, y)].symbol();
            line.push_str(s);
            // a wide glyph occupies the next cell too
            skip = unicode_width(s).saturating_sub(1);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn unicode_width(s: &str) -> usize {
    // every glyph we draw is one column wide
    if s.is_empty() {
        0
    } else {
        1
    }
}

fn ansi_color(c: Color, fg: bool) -> Option<String> {
    let base = if fg { 30 } else { 40 };
    let n = match c {
        Color::Reset => return None,
        Color::Black => base,
        Color::Red => base + 1,
        Color::Green => base + 2,
        Color::Yellow => base + 3,
        Color::Blue => base + 4,
        Color::Magenta => base + 5,
        Color::Cyan => base + 6,
        Color::Gray => base + 7,
        Color::DarkGray => base + 60,
        Color::LightRed => base + 61,
        Color::LightGreen => base + 62,
        Color::LightYellow => base + 63,
        Color::LightBlue => base + 64,
        Color::LightMagenta => base + 65,
        Color::LightCyan => base + 66,
        Color::White => base + 67,
        Color::Indexed(i) => return Some(format!("{};5;{}", if fg { 38 } else { 48 }, i)),
        Color::Rgb(r, g, b) => return Some(format!("{};2;{};{};{}", if fg { 38 } else { 48 }, r, g, b)),
    };
    Some(n.to_string())
}

pub fn to_ansi(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut last = String::new();
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            let mut codes = vec!["0".to_string()];
            if let Some(f) = ansi_color(c.fg, true) {
                codes.push(f);
            }
            if let Some(b) = ansi_color(c.bg, false) {
                codes.push(b);
            }
            if c.modifier.contains(Modifier::BOLD) {
                codes.push("1".into());
            }
            if c.modifier.contains(Modifier::REVERSED) {
                codes.push("7".into());
            }
            let sgr = format!("\x1b[{}m", codes.join(";"));
            if sgr != last {
                out.push_str(&sgr);
                last = sgr;
            }
            out.push_str(c.symbol());
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

fn rgb(c: Color, fg: bool) -> &'static str {
    match c {
        Color::Reset => {
            if fg {
                "#d0d0d0"
            } else {
                "#1c1c1c"
            }
        }
        Color::Black => "#000000",
        Color::Red => "#cd3131",
        Color::Green => "#0dbc79",
        Color::Yellow => "#e5e510",
        Color::Blue => "#2472c8",
        Color::Magenta => "#bc3fbc",
        Color::Cyan => "#11a8cd",
        Color::Gray => "#bbbbbb",
        Color::DarkGray => "#666666",
        Color::LightRed => "#f14c4c",
        Color::LightGreen => "#23d18b",
        Color::LightYellow => "#f5f543",
        Color::LightBlue => "#3b8eea",
        Color::LightMagenta => "#d670d6",
        Color::LightCyan => "#29b8db",
        Color::White => "#ffffff",
        _ => "#d0d0d0",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG picture of the frame: one rect per background run, one text per cell run.
pub fn to_svg(buf: &Buffer) -> String {
    let (cw, ch) = (8.4f32, 17.0f32);
    let (w, h) = (buf.area.width as f32 * cw, buf.area.height as f32 * ch);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"14\">\n<rect width=\"100%\" height=\"100%\" fill=\"#1c1c1c\"/>\n"
    );
    for y in 0..buf.area.height {
        let mut x = 0;
        while x < buf.area.width {
            let c = &buf[(x, y)];
            let (mut fg, mut bg) = (c.fg, c.bg);
            if c.modifier.contains(Modifier::REVERSED) {
                std::mem::swap(&mut fg, &mut bg);
                if fg == Color::Reset {
                    fg = Color::Black;
                }
                if bg == Color::Reset {
                    bg = Color::Gray;
                }
            }
            let bold = c.modifier.contains(Modifier::BOLD);
            // extend the run while the style stays the same
            let mut end = x + 1;
            let mut text = c.symbol().to_string();
            while end < buf.area.width {
                let d = &buf[(end, y)];
                if d.fg != c.fg || d.bg != c.bg || d.modifier != c.modifier {
                    break;
                }
                text.push_str(d.symbol());
                end += 1;
            }
            let (px, py) = (x as f32 * cw, y as f32 * ch);
            if bg != Color::Reset {
                out += &format!(
                    "<rect x=\"{px:.1}\" y=\"{py:.1}\" width=\"{:.1}\" height=\"{ch}\" fill=\"{}\"/>\n",
                    (end - x) as f32 * cw,
                    rgb(bg, false)
                );
            }
            if !text.trim().is_empty() {
                out += &format!(
                    "<text x=\"{px:.1}\" y=\"{:.1}\" fill=\"{}\"{} xml:space=\"preserve\" textLength=\"{:.1}\" lengthAdjust=\"spacingAndGlyphs\">{}</text>\n",
                    py + ch * 0.78,
                    rgb(fg, true),
                    if bold { " font-weight=\"bold\"" } else { "" },
                    (end - x) as f32 * cw,
                    xml_escape(&text)
                );
            }
            x = end;
        }
    }
    out += "</svg>\n";
    out
}
