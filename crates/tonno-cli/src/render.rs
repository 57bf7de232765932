//! Pictures for reports: orthogonal planes through a point of a volume,
//! grey image, truth contour and heatmap overlays, written as PNG; and a
//! small SVG line plot.

use std::path::Path;

use anyhow::Context;
use tonno_core::normalize::quantile;
use tonno_core::volume::Volume;

/// An RGB image, row-major.
pub struct Rgb {
    pub w: usize,
    pub h: usize,
    pub px: Vec<[u8; 3]>,
}

impl Rgb {
    pub fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![[255, 255, 255]; w * h],
        }
    }

    /// Copies `tile` with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, tile: &Rgb, x: usize, y: usize) {
        for r in 0..tile.h {
            for c in 0..tile.w {
                if y + r < self.h && x + c < self.w {
                    self.px[(y + r) * self.w + x + c] = tile.px[r * tile.w + c];
                }
            }
        }
    }

    /// Nearest-neighbour magnification by `k`.
    pub fn scaled(&self, k: usize) -> Rgb {
        let mut out = Rgb::new(self.w * k, self.h * k);
        for r in 0..out.h {
            for c in 0..out.w {
                out.px[r * out.w + c] = self.px[(r / k) * self.w + c / k];
            }
        }
        out
    }

    /// The image as PNG bytes.
    pub fn png_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let data: Vec<u8> = self.px.iter().flatten().copied().collect();
        enc.write_header()
            .and_then(|mut w| {
                w.write_image_data(&data)?;
                w.finish()
            })
            .context("encoding a PNG")?;
        Ok(bytes)
    }

    pub fn write_png(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self
            .png_bytes()
            .with_context(|| format!("writing {}", path.display()))?;
        tonno_core::io::write_atomically(path, true, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|source| tonno_core::Error::Write {
                path: path.to_path_buf(),
                source,
            })
        })?;
        Ok(())
    }
}

/// Which plane through a voxel.
#[derive(Debug, Clone, Copy)]
pub enum Plane {
    /// Fixed third voxel axis (axial for RAS volumes).
    Axial,
    /// Fixed second axis (coronal).
    Coronal,
    /// Fixed first axis (sagittal).
    Sagittal,
}

/// Values of channel 0 on a plane through `at`, as `(w, h, values)` with
/// rows flipped so that anterior/superior is up.
pub fn plane(v: &Volume, plane: Plane, at: [usize; 3]) -> (usize, usize, Vec<f32>) {
    let [nx, ny, nz] = v.shape();
    let (w, h) = match plane {
        Plane::Axial => (nx, ny),
        Plane::Coronal => (nx, nz),
        Plane::Sagittal => (ny, nz),
    };
    let mut out = vec![0.0; w * h];
    for r in 0..h {
        for c in 0..w {
            let row = h - 1 - r;
            let (i, j, k) = match plane {
                Plane::Axial => (c, row, at[2]),
                Plane::Coronal => (c, at[1], row),
                Plane::Sagittal => (at[0], c, row),
            };
            out[r * w + c] = v.get(i, j, k, 0);
        }
    }
    (w, h, out)
}

/// A robust display range: the 1st and 99.5th percentiles.
pub fn window(v: &Volume) -> (f32, f32) {
    let d = v.channel(0);
    (quantile(d, 0.01), quantile(d, 0.995))
}

/// A "hot" colour map on `[0, 1]`: black, red, yellow, white.
fn hot(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let f = |x: f32| (x.clamp(0.0, 1.0) * 255.0) as u8;
    [f(t), f(t - 1.0), f(t - 2.0)]
}

/// The colour of the truth's contour.
pub const TRUTH: [u8; 3] = [0, 230, 0];
/// The colour of a predicted mask's contour.
pub const PREDICTED: [u8; 3] = [0, 200, 255];

/// A grey image with an optional heatmap overlay (values mapped by `heat_range`)
/// and the contours of masks (`> 0`), each in its colour, drawn in order.
pub fn tile(
    image: &(usize, usize, Vec<f32>),
    range: (f32, f32),
    heat: Option<(&[f32], (f32, f32))>,
    contours: &[(&[f32], [u8; 3])],
) -> Rgb {
    let (w, h, img) = image;
    let mut out = Rgb::new(*w, *h);
    for q in 0..w * h {
        let g = ((img[q] - range.0) / (range.1 - range.0)).clamp(0.0, 1.0);
        let grey = [(g * 255.0) as u8; 3];
        out.px[q] = match heat {
            Some((hv, (lo, hi))) => {
                let t = ((hv[q] - lo) / (hi - lo)).clamp(0.0, 1.0);
                if t > 0.15 {
                    let c = hot(t);
                    let a = 0.35 + 0.5 * t;
                    [0, 1, 2].map(|i| (grey[i] as f32 * (1.0 - a) + c[i] as f32 * a) as u8)
                } else {
                    grey
                }
            }
            None => grey,
        };
    }
    for &(m, colour) in contours {
        for r in 0..*h {
            for c in 0..*w {
                let inside = |rr: isize, cc: isize| {
                    rr >= 0
                        && cc >= 0
                        && (rr as usize) < *h
                        && (cc as usize) < *w
                        && m[rr as usize * w + cc as usize] > 0.0
                };
                let (ri, ci) = (r as isize, c as isize);
                if inside(ri, ci)
                    && !(inside(ri - 1, ci)
                        && inside(ri + 1, ci)
                        && inside(ri, ci - 1)
                        && inside(ri, ci + 1))
                {
                    out.px[r * w + c] = colour;
                }
            }
        }
    }
    out
}

/// A line plot as SVG: one polyline per series of `(x, y)` points, log2 x axis.
pub fn svg_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let (w, h, l, r, t, b) = (560.0, 360.0, 60.0, 150.0, 40.0, 50.0);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0.log2()))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min),
        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let y1 = ys.iter().cloned().fold(0.0, f64::max).max(0.1) * 1.1;
    let px = |x: f64| l + (x.log2() - x0) / (x1 - x0).max(1e-9) * (w - l - r);
    let py = |y: f64| h - b - y / y1 * (h - t - b);
    let colors = [
        "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        (w - r + l) / 2.0
    );
    s += &format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b,
        w - r,
        h - b
    );
    s += &format!(
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b
    );
    let mut ticks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .collect();
    ticks.sort_by(|a, b| a.total_cmp(b));
    ticks.dedup();
    for x in ticks {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>\n",
            px(x),
            h - b + 18.0
        );
    }
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.2}</text>\n",
            l - 6.0,
            py(y) + 4.0
        );
        s += &format!(
            "<line x1=\"{l}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\n",
            py(y),
            w - r
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n",
        (w - r + l) / 2.0,
        h - 12.0
    );
    s += &format!(
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n",
        (h - b + t) / 2.0,
        (h - b + t) / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for p in pts.iter().filter(|p| p.1.is_finite()) {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                px(p.0),
                py(p.1)
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            w - r + 10.0,
            t + 16.0 * (i as f64 + 1.0)
        );
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonno_core::affine::Affine;

    #[test]
    fn tiles_show_the_truth_contour_and_write_a_readable_png() {
        let v = Volume::from_fn([8, 6, 4], Affine::identity(), |i, j, _| (i + j) as f32).unwrap();
        let m = Volume::from_fn([8, 6, 4], Affine::identity(), |i, j, _| {
            ((2..5).contains(&i) && (2..4).contains(&j)) as u8 as f32
        })
        .unwrap();
        let img = plane(&v, Plane::Axial, [0, 0, 1]);
        assert_eq!((img.0, img.1), (8, 6));
        let truth = plane(&m, Plane::Axial, [0, 0, 1]).2;
        let t = tile(
            &img,
            window(&v),
            Some((&img.2, (0.0, 12.0))),
            &[(&truth, TRUTH)],
        );
        assert!(
            t.px.iter().filter(|p| **p == [0, 230, 0]).count() >= 4,
            "contour drawn"
        );
        // Contours are drawn in order: a mask equal to the truth hides it.
        let both = tile(
            &img,
            window(&v),
            None,
            &[(&truth, TRUTH), (&truth, PREDICTED)],
        );
        let count = |t: &Rgb, c: [u8; 3]| t.px.iter().filter(|p| **p == c).count();
        assert_eq!(count(&both, PREDICTED), count(&t, TRUTH));
        assert_eq!(count(&both, TRUTH), 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        t.scaled(3).write_png(&path).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = dec.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (24, 18));
    }

    #[test]
    fn svg_plot_has_a_point_per_value_and_skips_missing_ones() {
        let s = svg_plot(
            "t",
            "K",
            "Dice",
            &[("Dice", vec![(8.0, 0.1), (16.0, f64::NAN), (32.0, 0.3)])],
        );
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.starts_with("<svg") && s.contains(">32<"));
    }
}
