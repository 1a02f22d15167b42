//! The last hour's small charts: inline SVG, no script, sized to 60 minutes.

use std::fmt::Write;

use super::esc;

/// Bars (one series) or lines (several) over the minutes, scaled to the largest value.
pub(super) fn chart(out: &mut String, caption: &str, series: &[(&[u64], &str)]) {
    const W: u64 = 360;
    const H: u64 = 80;
    let top = series
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        out,
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(caption)
    );
    let step = W / 60;
    for (values, colour) in series {
        let start = 60usize.saturating_sub(values.len()) as u64;
        if series.len() == 1 {
            for (i, v) in values.iter().enumerate() {
                let h = v * (H - 4) / top;
                let x = (start + i as u64) * step;
                let _ = write!(
                    out,
                    "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"{colour}\"/>",
                    H - h,
                    step - 1
                );
            }
        } else {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let x = (start + i as u64) * step + step / 2;
                    format!("{x},{}", H - v * (H - 4) / top)
                })
                .collect();
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                points.join(" ")
            );
            // A dot per minute: a single minute is a point, not a line.
            for point in &points {
                let (x, y) = point.split_once(',').unwrap_or_default();
                let _ = write!(
                    out,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2\" fill=\"{colour}\"/>"
                );
            }
        }
    }
    let _ = write!(
        out,
        "<text x=\"2\" y=\"11\" font-size=\"10\" fill=\"#555\">max {top}</text></svg>\
         <figcaption>{}</figcaption></figure>",
        esc(caption)
    );
}
