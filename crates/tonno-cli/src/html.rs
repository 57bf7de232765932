//! `report.html`: one self-contained page that opens in any browser
//! without network access: every picture inline (PNG as `data:` URIs, plots
//! as inline SVG), its style and its few lines of script inline. It holds
//! the comparison table and, for each case, the axial, coronal and sagittal
//! planes through its lesion with each method's heatmap, chosen from a case
//! list and a method selector (also from the address: `#case=C&method=M`).

use std::path::Path;

use anyhow::Context;
use tonno_core::io::{case_name, list_images, read_image};

use crate::render::{self, Plane, Rgb};
use tonno_core::normalize::quantile;
use tonno_core::volume::Volume;

/// A table: its caption, header and rows of cells (plain text).
#[derive(Debug)]
pub struct Table {
    pub id: String,
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One case's pictures: a PNG per view (the image alone, then a method's
/// heatmap over it), all through the same three planes.
#[derive(Debug)]
pub struct CaseViews {
    pub case: String,
    /// What the planes go through (the lesion's centre, or the middle).
    pub note: String,
    pub views: Vec<(String, Vec<u8>)>,
}

/// The whole page.
#[derive(Debug, Default)]
pub struct Page {
    pub title: String,
    /// Paragraphs (plain text) under the title.
    pub intro: Vec<String>,
    pub tables: Vec<Table>,
    /// `(caption, svg)`: plots made by [`render::svg_plot`].
    pub plots: Vec<(String, String)>,
    pub cases: Vec<CaseViews>,
    /// A sentence under the case viewer saying what the pictures show.
    pub cases_note: String,
}

/// What a case's pictures show.
pub const CASES_NOTE: &str = "Choose a case on the left and a view above. Each picture: the axial, coronal and sagittal planes through the lesion's centre \
(or the middle of a scan without one), the truth outlined in green; 'image' is the scan alone, the others a method's heatmap over it, \
scaled from the heatmap's median (transparent) to its 99.9th percentile (white).";

/// Text for HTML: `&`, `<`, `>` and quotes escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648, section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [0, 1, 2].map(|i| chunk.get(i).copied().unwrap_or(0) as u32);
        let n = (b[0] << 16) | (b[1] << 8) | b[2];
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}\
th{background:#eee}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:bold;padding:4px 0}\
#viewer{display:flex;gap:1em;align-items:flex-start}#cases{display:flex;flex-direction:column;max-height:720px;overflow-y:auto;min-width:10em}\
#methods{margin-bottom:0.5em}button{margin:2px;padding:3px 8px;border:1px solid #999;background:#f6f6f6;cursor:pointer;text-align:left}\
button.on{background:#1f77b4;color:white;border-color:#1f77b4}#pictures img{image-rendering:pixelated;max-width:100%}\
.note{color:#555;font-size:90%}";

/// Shows one case's view for one method, from the buttons or the address.
const SCRIPT: &str = r#"(function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('#pictures img'));
  var caseButtons = Array.prototype.slice.call(document.querySelectorAll('#cases button'));
  var methodButtons = Array.prototype.slice.call(document.querySelectorAll('#methods button'));
  var notes = Array.prototype.slice.call(document.querySelectorAll('#pictures p'));
  if (imgs.length === 0) { return; }
  var state = { c: caseButtons[0].dataset.case, m: methodButtons[Math.min(1, methodButtons.length - 1)].dataset.method };
  function show() {
    var found = false;
    imgs.forEach(function (i) {
      var on = i.dataset.case === state.c && i.dataset.method === state.m;
      i.hidden = !on;
      found = found || on;
    });
    notes.forEach(function (p) { p.hidden = p.dataset.case !== state.c; });
    caseButtons.forEach(function (b) { b.className = b.dataset.case === state.c ? 'on' : ''; });
    methodButtons.forEach(function (b) { b.className = b.dataset.method === state.m ? 'on' : ''; });
    document.getElementById('shown').textContent = found ? state.c + ': ' + state.m : 'no such view';
  }
  function fromAddress() {
    location.hash.slice(1).split('&').forEach(function (kv) {
      var p = kv.split('=');
      if (p[0] === 'case') { state.c = decodeURIComponent(p[1] || ''); }
      if (p[0] === 'method') { state.m = decodeURIComponent(p[1] || ''); }
    });
  }
  caseButtons.forEach(function (b) { b.addEventListener('click', function () { state.c = b.dataset.case; show(); }); });
  methodButtons.forEach(function (b) { b.addEventListener('click', function () { state.m = b.dataset.method; show(); }); });
  window.addEventListener('hashchange', function () { fromAddress(); show(); });
  fromAddress();
  show();
})();"#;

/// The page as HTML.
pub fn render_page(page: &Page) -> String {
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    for p in &page.intro {
        h += &format!("<p>{}</p>\n", escape(p));
    }
    for t in &page.tables {
        h += &format!(
            "<table id=\"{}\">\n<caption>{}</caption>\n<thead><tr>",
            escape(&t.id),
            escape(&t.caption)
        );
        for c in &t.header {
            h += &format!("<th>{}</th>", escape(c));
        }
        h += "</tr></thead>\n<tbody>\n";
        for row in &t.rows {
            h += "<tr>";
            for c in row {
                h += &format!("<td>{}</td>", escape(c));
            }
            h += "</tr>\n";
        }
        h += "</tbody>\n</table>\n";
    }
    for (caption, svg) in &page.plots {
        h += &format!(
            "<figure>\n{svg}\n<figcaption class=\"note\">{}</figcaption>\n</figure>\n",
            escape(caption)
        );
    }
    if !page.cases.is_empty() {
        h += &cases_html(page);
    }
    h += &format!("<script>\n{SCRIPT}\n</script>\n</body>\n</html>\n");
    h
}

fn cases_html(page: &Page) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for c in &page.cases {
        for (m, _) in &c.views {
            if !methods.contains(&m.as_str()) {
                methods.push(m);
            }
        }
    }
    let mut h = format!(
        "<h2>Cases</h2>\n<p class=\"note\">{}</p>\n<div id=\"viewer\">\n<div id=\"cases\">\n",
        escape(&page.cases_note)
    );
    for c in &page.cases {
        h += &format!("<button data-case=\"{0}\">{0}</button>\n", escape(&c.case));
    }
    h += "</div>\n<div>\n<div id=\"methods\">\n";
    for m in &methods {
        h += &format!("<button data-method=\"{0}\">{0}</button>\n", escape(m));
    }
    h += "</div>\n<div id=\"shown\" class=\"note\"></div>\n<div id=\"pictures\">\n";
    for c in &page.cases {
        h += &format!(
            "<p class=\"note\" data-case=\"{}\" hidden>{}</p>\n",
            escape(&c.case),
            escape(&c.note)
        );
        for (m, png) in &c.views {
            h += &format!(
                "<img data-case=\"{0}\" data-method=\"{1}\" alt=\"{0}, {1}\" hidden src=\"data:image/png;base64,{2}\">\n",
                escape(&c.case),
                escape(m),
                base64(png)
            );
        }
    }
    h += "</div>\n</div>\n</div>\n";
    h
}

/// Writes the page to `path` (whole, through a temporary file).
pub fn write(path: &Path, page: &Page, force: bool) -> anyhow::Result<()> {
    Ok(tonno_core::io::write_text(path, &render_page(page), force)?)
}

/// The voxel the planes of a case go through: the centre of its mask's
/// lesion voxels, or the middle of the grid for a scan without one.
pub fn focus(mask: &Volume) -> ([usize; 3], bool) {
    let [nx, ny, nz] = mask.shape();
    let (mut sum, mut n) = ([0usize; 3], 0usize);
    for (i, v) in mask.data().iter().enumerate() {
        if *v > 0.0 {
            let at = [i % nx, (i / nx) % ny, i / (nx * ny)];
            (0..3).for_each(|a| sum[a] += at[a]);
            n += 1;
        }
    }
    if n == 0 {
        return ([nx / 2, ny / 2, nz / 2], false);
    }
    (sum.map(|s| s / n), true)
}

/// One case's views as PNGs: the three planes through `at`, first the
/// image alone (or black without one) with the truth outlined, then each
/// heatmap over it (scaled from its median to its 99.9th percentile).
pub fn case_views(
    image: Option<&Volume>,
    mask: &Volume,
    heatmaps: &[(String, Volume)],
    at: [usize; 3],
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let blank;
    let image = match image {
        Some(v) => v,
        None => {
            blank = Volume::filled(mask.shape(), *mask.world_from_voxel(), 0.0)?;
            &blank
        }
    };
    let range = match render::window(image) {
        (lo, hi) if hi > lo => (lo, hi),
        (lo, _) => (lo, lo + 1.0),
    };
    let planes = [Plane::Axial, Plane::Coronal, Plane::Sagittal];
    let dims: Vec<(usize, usize)> = planes
        .iter()
        .map(|p| {
            let (w, h, _) = render::plane(image, *p, at);
            (w, h)
        })
        .collect();
    let side = dims.iter().map(|&(w, h)| w.max(h)).max().unwrap_or(1);
    let scale = (160 / side).max(1);
    let gap = 4;
    let picture = |heat: Option<&Volume>| {
        let mut canvas = Rgb::new(
            dims.iter().map(|d| d.0 * scale + gap).sum(),
            dims.iter().map(|d| d.1).max().unwrap_or(1) * scale,
        );
        let hr = heat.map(|v| (quantile(v.data(), 0.5), quantile(v.data(), 0.999)));
        let mut x = 0;
        for (p, (w, _)) in planes.iter().zip(&dims) {
            let img = render::plane(image, *p, at);
            let truth = render::plane(mask, *p, at).2;
            let hp = heat.map(|v| render::plane(v, *p, at).2);
            let tile = render::tile(
                &img,
                range,
                hp.as_deref().zip(hr),
                &[(&truth, render::TRUTH)],
            );
            canvas.blit(&tile.scaled(scale), x, 0);
            x += w * scale + gap;
        }
        canvas.png_bytes()
    };
    let mut views = vec![("image".to_string(), picture(None)?)];
    for (name, heat) in heatmaps {
        anyhow::ensure!(
            heat.shape() == mask.shape(),
            "the {name} heatmap is {:?} voxels, its mask {:?}",
            heat.shape(),
            mask.shape()
        );
        views.push((name.clone(), picture(Some(heat))?));
    }
    Ok(views)
}

/// The views of up to `limit` cases of `truth` (masks `CASE.nii.gz`, by
/// name), with their images from `images` when given and their heatmaps
/// `heat/CASE_METHOD.nii.gz` of each of `methods`.
pub fn folder_views(
    images: Option<&Path>,
    truth: &Path,
    heat: &Path,
    methods: &[String],
    limit: usize,
) -> anyhow::Result<Vec<CaseViews>> {
    let images: std::collections::BTreeMap<String, std::path::PathBuf> = match images {
        Some(dir) => list_images(dir)?
            .into_iter()
            .map(|p| (case_name(&p), p))
            .collect(),
        None => Default::default(),
    };
    let mut out = Vec::new();
    for mask_path in list_images(truth)?.into_iter().take(limit) {
        let case = case_name(&mask_path);
        let mask = read_image(&mask_path)?.volume;
        let image = match images.get(&case) {
            Some(p) => Some(read_image(p)?.volume),
            None => None,
        };
        let heatmaps = methods
            .iter()
            .map(|m| {
                let p = heat.join(format!("{case}_{m}.nii.gz"));
                Ok((m.clone(), read_image(&p)?.volume))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (at, lesion) = focus(&mask);
        let note = format!(
            "{case}: {} voxel ({}, {}, {}){}",
            if lesion {
                "planes through the lesion's centre,"
            } else {
                "no lesion; planes through the middle,"
            },
            at[0],
            at[1],
            at[2],
            if image.is_some() {
                ""
            } else {
                " (no image given: heatmaps over black)"
            }
        );
        let views = case_views(image.as_ref(), &mask, &heatmaps, at)
            .with_context(|| format!("pictures of case {case}"))?;
        out.push(CaseViews { case, note, views });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn text_is_escaped_and_every_view_gets_an_image() {
        let page = Page {
            title: "a <b> & \"c\"".into(),
            tables: vec![Table {
                id: "results".into(),
                caption: "x".into(),
                header: vec!["method".into()],
                rows: vec![vec!["<script>".into()]],
            }],
            cases: vec![CaseViews {
                case: "case_1".into(),
                note: "n".into(),
                views: vec![("image".into(), vec![1, 2, 3]), ("tonno".into(), vec![4])],
            }],
            ..Page::default()
        };
        let h = render_page(&page);
        assert!(h.contains("<title>a &lt;b&gt; &amp; &quot;c&quot;</title>"));
        assert!(h.contains("<td>&lt;script&gt;</td>"));
        assert_eq!(h.matches("<img ").count(), 2);
        assert!(h.contains(
            "data-method=\"tonno\" alt=\"case_1, tonno\" hidden src=\"data:image/png;base64,BA==\""
        ));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no address outside the page"
        );
    }
}
