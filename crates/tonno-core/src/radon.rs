//! The 3D Radon transform (plane integrals) and its inverse (docs/METHOD.md
//! section 2).
//!
//! - Forward: `Rf(n_k, t_j)` = a slice's pixel sum times the pixel area
//!   ([`plane_integrals`]), giving a sinogram of shape `(K, S)`, row-major.
//! - Filter: `g''` along `t`, by the central difference or spectrally as
//!   `-omega^2 W(omega)` with a window, the profile's ends padded by zeros or
//!   by repeating the end values ([`Filter`]).
//! - Backprojection: `f(x) = -1/(2 pi K) sum_k g_k''((x - c).n_k)` with
//!   linear interpolation in `t` ([`backproject`]); [`project_voxels`] is its
//!   exact adjoint.
//! - Stack backprojection: for the Averaged and Tomographic CAMs, a filtered
//!   stack `(K, S, P, P)` resampled trilinearly at `(t, a, b)(x)` and summed
//!   ([`backproject_stack`]).
//!
//! - Algebraic reconstruction: SIRT with the same projector pair, for
//!   profiles too noisy or too few for the second derivative ([`sirt`]).
//! - Profiles of a network's outputs carry its bias at both ends;
//!   [`Sinogram::without_end_trend`] removes the line through them, which the
//!   second derivative of filtered backprojection does implicitly.
//!
//! Units: offsets and distances in mm, plane integrals in (volume unit) x mm^2.

use std::f64::consts::PI;
use std::sync::Arc;

use rayon::prelude::*;
use rustfft::{FftPlanner, num_complex::Complex};
use serde::{Deserialize, Serialize};

use crate::affine::{dot, sub};
use crate::error::{Error, Result};
use crate::geometry::{Grid, TomoGeometry, sample_line};
use crate::volume::Volume;

/// Profiles along `t`, one per direction: `values[k * S + j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sinogram {
    pub geometry: Arc<TomoGeometry>,
    pub values: Vec<f32>,
}

impl Sinogram {
    /// Wraps values laid out `(K, S)`.
    pub fn new(geometry: Arc<TomoGeometry>, values: Vec<f32>) -> Result<Self> {
        let want = geometry.directions() * geometry.slices;
        if values.len() != want {
            return Err(Error::Shape {
                what: "sinogram".into(),
                expected: format!(
                    "{} x {} = {want} values",
                    geometry.directions(),
                    geometry.slices
                ),
                got: format!("{} values", values.len()),
            });
        }
        Ok(Self { geometry, values })
    }

    /// The profile of direction `k`.
    pub fn profile(&self, k: usize) -> &[f32] {
        let s = self.geometry.slices;
        &self.values[k * s..(k + 1) * s]
    }

    /// Each profile minus the straight line through its first and last
    /// values: the level an encoder gives slices that cut nothing, which
    /// plane integrals of a volume (0 at both ends) do not have.
    pub fn without_end_trend(&self) -> Self {
        let s = self.geometry.slices;
        let mut values = self.values.clone();
        for profile in values.chunks_mut(s) {
            let (first, last) = (profile[0], profile[s - 1]);
            let span = (s.max(2) - 1) as f32;
            for (j, v) in profile.iter_mut().enumerate() {
                *v -= first + (last - first) * j as f32 / span;
            }
        }
        Self {
            geometry: self.geometry.clone(),
            values,
        }
    }
}

/// Plane integrals of channel `channel` for every direction and offset of
/// `geometry`: each slice's pixel sum times the pixel area. Streams one
/// direction at a time per thread (memory: one stack per thread).
pub fn plane_integrals(volume: &Volume, channel: usize, geometry: &Arc<TomoGeometry>) -> Sinogram {
    let s = geometry.slices;
    let area = geometry.pixel_mm() * geometry.pixel_mm();
    let inv = volume.voxel_from_world();
    let data = volume.channel(channel);
    // One row buffer per thread: the stack is never materialised.
    let values: Vec<f32> = (0..geometry.directions() * s)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; geometry.pixels],
            |row, kj| {
                let plane = geometry.plane(kj / s, kj % s);
                let o = inv.apply(plane.origin);
                let du = inv.apply_vector(plane.du);
                let dv = inv.apply_vector(plane.dv);
                let mut total = 0.0f64;
                for b in 0..plane.pixels {
                    let start = [0, 1, 2].map(|d| o[d] + b as f64 * dv[d]);
                    sample_line(data, volume.shape(), start, du, 0.0, row);
                    total += sum_f32(row);
                }
                (total * area) as f32
            },
        )
        .collect();
    Sinogram::new(geometry.clone(), values).expect("K x S values by construction")
}

/// Sum with eight f32 partial sums (vectorisable), returned as f64.
fn sum_f32(xs: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

/// How the second derivative along `t` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FilterKind {
    /// `(g[j+1] - 2 g[j] + g[j-1]) / dt^2`.
    CentralDifference,
    /// `-omega^2 W(omega)` by FFT, with zero padding to at least twice the length.
    #[default]
    Spectral,
}

/// Apodising window of the spectral filter (`omega_c` = cutoff x Nyquist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Window {
    /// No apodisation up to the cutoff: the sharpest, the noisiest.
    None,
    /// `0.5 (1 + cos(pi omega / omega_c))`: smooth, strong noise suppression.
    #[default]
    Hann,
    /// `sinc(omega / (2 omega_c))`, the Shepp-Logan form: a mild roll-off.
    SheppLogan,
}

/// How a profile is extended past its ends before filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// Zeros: right for plane integrals, which fall to 0 at the ball's edge.
    Zero,
    /// Repeat the end values: right for an encoder's logits, which keep the
    /// network's bias where slices cut nothing (docs/METHOD.md section 7: zero padding then
    /// puts a step at both ends, backprojected as a bright shell).
    #[default]
    Edge,
}

/// The `-d^2/dt^2`-type filter of the inverse transform.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub kind: FilterKind,
    pub window: Window,
    /// Fraction of the Nyquist frequency where the window reaches 0 (spectral only).
    pub cutoff: f64,
    pub padding: Padding,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            kind: FilterKind::Spectral,
            window: Window::Hann,
            cutoff: 1.0,
            padding: Padding::Edge,
        }
    }
}

impl Filter {
    /// Checks the cutoff.
    pub fn validate(&self) -> Result<()> {
        if !(self.cutoff > 0.0 && self.cutoff <= 1.0) {
            return Err(Error::invalid(
                "filter cutoff",
                format!("{} (must be in (0, 1])", self.cutoff),
            ));
        }
        Ok(())
    }

    /// Second derivatives along `t` of every profile of `sinogram`
    /// (spacing `dt`), same shape.
    pub fn apply(&self, sinogram: &Sinogram) -> Result<Sinogram> {
        self.validate()?;
        let s = sinogram.geometry.slices;
        let dt = sinogram.geometry.dt_mm();
        let mut out = vec![0.0f32; sinogram.values.len()];
        match self.kind {
            FilterKind::CentralDifference => {
                out.par_chunks_mut(s)
                    .zip(sinogram.values.par_chunks(s))
                    .for_each(|(o, g)| self.central_difference(g, dt, o));
            }
            FilterKind::Spectral => {
                let n = (4 * s).next_power_of_two();
                let mut planner = FftPlanner::<f64>::new();
                let fwd = planner.plan_fft_forward(n);
                let inv = planner.plan_fft_inverse(n);
                let response = self.spectral_response(n, dt);
                out.par_chunks_mut(s)
                    .zip(sinogram.values.par_chunks(s))
                    .for_each(|(o, g)| {
                        let mut buf = self.padded(g, n);
                        fwd.process(&mut buf);
                        for (b, r) in buf.iter_mut().zip(&response) {
                            *b *= r / n as f64;
                        }
                        inv.process(&mut buf);
                        for (o, b) in o.iter_mut().zip(&buf) {
                            *o = b.re as f32;
                        }
                    });
            }
        }
        Sinogram::new(sinogram.geometry.clone(), out)
    }

    fn central_difference(&self, g: &[f32], dt: f64, out: &mut [f32]) {
        let s = g.len();
        let (left, right) = match self.padding {
            Padding::Zero => (0.0, 0.0),
            Padding::Edge => (g[0] as f64, g[s - 1] as f64),
        };
        let at = |j: isize| -> f64 {
            if j < 0 {
                left
            } else if j as usize >= s {
                right
            } else {
                g[j as usize] as f64
            }
        };
        let inv = 1.0 / (dt * dt);
        for (j, o) in out.iter_mut().enumerate() {
            let j = j as isize;
            *o = ((at(j + 1) - 2.0 * at(j) + at(j - 1)) * inv) as f32;
        }
    }

    /// The profile in a length-`n` circular buffer. Edge padding repeats each
    /// end over a quarter of the pad and joins them by a linear ramp in the
    /// middle of the pad, far from the data, so the wrap-around has no step.
    fn padded(&self, g: &[f32], n: usize) -> Vec<Complex<f64>> {
        let s = g.len();
        let mut buf = vec![Complex::new(0.0, 0.0); n];
        for (b, &v) in buf.iter_mut().zip(g) {
            b.re = v as f64;
        }
        if self.padding == Padding::Edge {
            let pad = n - s;
            let (first, last) = (g[0] as f64, g[s - 1] as f64);
            let q = pad / 4;
            let ramp = pad - 2 * q;
            for m in 0..pad {
                buf[s + m].re = if m < q {
                    last
                } else if m >= q + ramp {
                    first
                } else {
                    let f = (m - q) as f64 / ramp as f64;
                    last + (first - last) * f
                };
            }
        }
        buf
    }

    /// `-omega^2 W(omega)` on the FFT's frequency grid.
    fn spectral_response(&self, n: usize, dt: f64) -> Vec<f64> {
        let nyquist = PI / dt;
        let omega_c = self.cutoff * nyquist;
        (0..n)
            .map(|m| {
                let mm = if m <= n / 2 {
                    m as f64
                } else {
                    m as f64 - n as f64
                };
                let omega = 2.0 * PI * mm / (n as f64 * dt);
                let x = omega.abs() / omega_c;
                let w = if x > 1.0 {
                    0.0
                } else {
                    match self.window {
                        Window::None => 1.0,
                        Window::Hann => 0.5 * (1.0 + (PI * x).cos()),
                        Window::SheppLogan => {
                            let a = PI * x / 2.0;
                            if a == 0.0 { 1.0 } else { a.sin() / a }
                        }
                    }
                };
                -omega * omega * w
            })
            .collect()
    }
}

/// Guard cells on each side of a profile: zeros, so that a voxel beyond the
/// ball reads 0 one cell past the last offset.
const GUARD: usize = 2;

/// Profile index coefficients of direction `k` on `grid`:
/// `tau(i, j, l) = tau0 + i a0 + j a1 + l a2` in units of `dt`, shifted by GUARD.
fn tau_coefficients(geometry: &TomoGeometry, grid: &Grid, k: usize) -> [f64; 4] {
    let n = geometry.frames[k].n;
    let dt = geometry.dt_mm();
    let a = &grid.world_from_voxel;
    let origin = sub(a.origin(), geometry.ball.center_mm);
    let tau0 = (dot(origin, n) + geometry.ball.radius_mm) / dt + GUARD as f64;
    [
        tau0,
        dot(a.column(0), n) / dt,
        dot(a.column(1), n) / dt,
        dot(a.column(2), n) / dt,
    ]
}

/// A profile with zero guards as `(values, next - value)` arrays, so that
/// `lerp(tau) = values[m] + (tau - m) * slopes[m]` with `m = floor(tau)`.
struct LerpTable {
    values: Vec<f32>,
    slopes: Vec<f32>,
}

impl LerpTable {
    fn new(profile: &[f32], scale: f32) -> Self {
        let len = profile.len() + 2 * GUARD;
        let mut values = vec![0.0f32; len];
        for (v, &p) in values[GUARD..].iter_mut().zip(profile) {
            *v = p * scale;
        }
        let slopes = (0..len)
            .map(|m| {
                if m + 1 < len {
                    values[m + 1] - values[m]
                } else {
                    0.0
                }
            })
            .collect();
        Self { values, slopes }
    }

    /// The largest `tau` whose `m + 1` is still in the table.
    fn max_tau(&self) -> f32 {
        (self.values.len() - 2) as f32
    }
}

/// The name of the backprojection kernel this process uses (`scalar`,
/// `avx2`, `avx512`): the widest the CPU runs, or the one `TONNO_SIMD`
/// forces. An unknown or unsupported `TONNO_SIMD` is an error naming it.
pub fn simd_kernel() -> Result<&'static str> {
    let forced = std::env::var("TONNO_SIMD").ok();
    RowKernel::choose(forced.as_deref()).map(RowKernel::name)
}

/// Backprojection: `out(x) = scale * sum_k g_k(t_k(x))`, `t_k(x) = (x - c).n_k`,
/// linear interpolation in `t`, 0 beyond one `dt` past the profile's ends.
/// `out` is laid out on `grid` (i fastest). The exact adjoint of
/// [`project_voxels`].
pub fn backproject(sinogram: &Sinogram, grid: &Grid, scale: f32) -> Vec<f32> {
    let geometry = &*sinogram.geometry;
    let k_dirs = geometry.directions();
    let tables: Vec<LerpTable> = (0..k_dirs)
        .map(|k| LerpTable::new(sinogram.profile(k), scale))
        .collect();
    let coefs: Vec<[f64; 4]> = (0..k_dirs)
        .map(|k| tau_coefficients(geometry, grid, k))
        .collect();
    backproject_with(RowKernel::detect(), &tables, &coefs, grid)
}

fn backproject_with(
    kernel: RowKernel,
    tables: &[LerpTable],
    coefs: &[[f64; 4]],
    grid: &Grid,
) -> Vec<f32> {
    let [nx, ny, _] = grid.shape;
    let mut out = vec![0.0f32; grid.voxels()];
    out.par_chunks_mut(nx).enumerate().for_each(|(row, acc)| {
        let (j, l) = ((row % ny) as f64, (row / ny) as f64);
        for (table, c) in tables.iter().zip(coefs) {
            let start = (c[0] + j * c[2] + l * c[3]) as f32;
            kernel.run(table, start, c[1] as f32, acc);
        }
    });
    out
}

/// The widest SIMD form of the backprojection row loop this CPU runs.
#[derive(Debug, Clone, Copy)]
enum RowKernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl RowKernel {
    /// The best kernel for this CPU, or the one `TONNO_SIMD` forces. The
    /// backprojection cannot fail, so a bad `TONNO_SIMD` falls back here;
    /// programs call [`simd_kernel`] first to refuse it by name.
    fn detect() -> Self {
        let forced = std::env::var("TONNO_SIMD").ok();
        Self::choose(forced.as_deref()).unwrap_or(Self::Scalar)
    }

    /// The kernel `forced` names (any when `None`), or why it cannot be had.
    fn choose(forced: Option<&str>) -> Result<Self> {
        let available = Self::available();
        match forced {
            None => Ok(available[0]),
            Some(f) => available
                .iter()
                .copied()
                .find(|k| k.name() == f)
                .ok_or_else(|| {
                    let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
                    let known = ["scalar", "avx2", "avx512"].contains(&f);
                    Error::invalid(
                        "TONNO_SIMD",
                        format!(
                            "{f:?} is {}; this CPU runs {}",
                            if known {
                                "not supported by this CPU"
                            } else {
                                "not a kernel (scalar, avx2 or avx512)"
                            },
                            names.join(", ")
                        ),
                    )
                }),
        }
    }

    /// Every kernel this CPU can run, widest first.
    fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Self::Avx2);
            }
        }
        out.push(Self::Scalar);
        out
    }

    fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => "avx512",
        }
    }

    /// `acc[i] += lerp(table, clamp(start + i * step))`.
    #[inline]
    fn run(self, table: &LerpTable, start: f32, step: f32, acc: &mut [f32]) {
        match self {
            Self::Scalar => backproject_row_scalar(table, start, step, acc, 0),
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { simd::backproject_row_avx2(table, start, step, acc) },
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe { simd::backproject_row_avx512(table, start, step, acc) },
        }
    }
}

/// Scalar row loop from index `from` on (also the SIMD loops' tail).
#[inline(always)]
fn backproject_row_scalar(table: &LerpTable, start: f32, step: f32, acc: &mut [f32], from: usize) {
    let max_tau = table.max_tau();
    for (i, a) in acc.iter_mut().enumerate().skip(from) {
        let tau = (start + i as f32 * step).clamp(0.0, max_tau);
        let m = tau as usize;
        let f = tau - m as f32;
        *a += table.values[m] + f * table.slopes[m];
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Gather-based row loops. Indices are clamped to `[0, max_tau]` before
    //! the gathers, and the tables hold `max_tau + 2` entries, so every
    //! gathered index is in bounds.
    use std::arch::x86_64::*;

    use super::{LerpTable, backproject_row_scalar};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backproject_row_avx2(table: &LerpTable, start: f32, step: f32, acc: &mut [f32]) {
        let n = acc.len();
        let lanes = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        let (vstep, vstart) = (_mm256_set1_ps(step), _mm256_set1_ps(start));
        let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(table.max_tau()));
        let mut i = 0;
        while i + 8 <= n {
            let idx = _mm256_add_ps(_mm256_set1_ps(i as f32), lanes);
            let tau = _mm256_min_ps(
                _mm256_max_ps(_mm256_add_ps(vstart, _mm256_mul_ps(idx, vstep)), lo),
                hi,
            );
            let m = _mm256_cvttps_epi32(tau);
            let f = _mm256_sub_ps(tau, _mm256_cvtepi32_ps(m));
            // SAFETY: 0 <= m <= max_tau < values.len() (module docs); acc[i..i+8] is in bounds.
            unsafe {
                let v = _mm256_i32gather_ps::<4>(table.values.as_ptr(), m);
                let d = _mm256_i32gather_ps::<4>(table.slopes.as_ptr(), m);
                let p = acc.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_add_ps(_mm256_loadu_ps(p), _mm256_fmadd_ps(f, d, v)),
                );
            }
            i += 8;
        }
        backproject_row_scalar(table, start, step, acc, i);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn backproject_row_avx512(
        table: &LerpTable,
        start: f32,
        step: f32,
        acc: &mut [f32],
    ) {
        let n = acc.len();
        let lanes = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let (vstep, vstart) = (_mm512_set1_ps(step), _mm512_set1_ps(start));
        let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(table.max_tau()));
        let mut i = 0;
        while i + 16 <= n {
            let idx = _mm512_add_ps(_mm512_set1_ps(i as f32), lanes);
            let tau = _mm512_min_ps(
                _mm512_max_ps(_mm512_add_ps(vstart, _mm512_mul_ps(idx, vstep)), lo),
                hi,
            );
            let m = _mm512_cvttps_epi32(tau);
            let f = _mm512_sub_ps(tau, _mm512_cvtepi32_ps(m));
            // SAFETY: as in the AVX2 loop.
            unsafe {
                let v = _mm512_i32gather_ps::<4>(m, table.values.as_ptr());
                let d = _mm512_i32gather_ps::<4>(m, table.slopes.as_ptr());
                let p = acc.as_mut_ptr().add(i);
                _mm512_storeu_ps(
                    p,
                    _mm512_add_ps(_mm512_loadu_ps(p), _mm512_fmadd_ps(f, d, v)),
                );
            }
            i += 16;
        }
        backproject_row_scalar(table, start, step, acc, i);
    }
}

/// Voxel-driven forward projection, the exact adjoint of [`backproject`]:
/// each voxel's value is split between the two profile samples around
/// `t_k(x)` with linear-interpolation weights, times `scale`.
pub fn project_voxels(
    volume: &[f32],
    grid: &Grid,
    geometry: &Arc<TomoGeometry>,
    scale: f32,
) -> Sinogram {
    assert_eq!(
        volume.len(),
        grid.voxels(),
        "project_voxels: volume matches the grid"
    );
    let s = geometry.slices;
    let len = s + 2 * GUARD;
    let max_tau = (len - 2) as f32;
    let [nx, ny, nz] = grid.shape;
    let values: Vec<f32> = (0..geometry.directions())
        .into_par_iter()
        .flat_map_iter(|k| {
            let c = tau_coefficients(geometry, grid, k);
            let mut bins = vec![0.0f64; len];
            for l in 0..nz {
                for j in 0..ny {
                    let start = (c[0] + j as f64 * c[2] + l as f64 * c[3]) as f32;
                    let row = &volume[nx * (j + ny * l)..nx * (j + ny * l + 1)];
                    for (i, &v) in row.iter().enumerate() {
                        let tau = (start + i as f32 * c[1] as f32).clamp(0.0, max_tau);
                        let m = tau as usize;
                        let f = (tau - m as f32) as f64;
                        bins[m] += v as f64 * (1.0 - f);
                        bins[m + 1] += v as f64 * f;
                    }
                }
            }
            bins[GUARD..GUARD + s]
                .iter()
                .map(|&b| (b * scale as f64) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    Sinogram::new(geometry.clone(), values).expect("K x S values by construction")
}

/// The inverse-transform scale `-1 / (2 pi K)`.
pub fn inverse_scale(directions: usize) -> f32 {
    (-1.0 / (2.0 * PI * directions as f64)) as f32
}

/// Inverse 3D Radon transform of a sinogram onto `grid`:
/// `f(x) = -1/(2 pi K) sum_k g_k''((x - c).n_k)`.
pub fn reconstruct(sinogram: &Sinogram, filter: &Filter, grid: &Grid) -> Result<Vec<f32>> {
    let filtered = filter.apply(sinogram)?;
    Ok(backproject(
        &filtered,
        grid,
        inverse_scale(sinogram.geometry.directions()),
    ))
}

/// How profiles become a volume.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reconstruction {
    /// Filtered backprojection: the filter's second derivative, then
    /// [`backproject`] ([`reconstruct`]).
    #[default]
    Fbp,
    /// SIRT ([`sirt`]) of the profiles less their end trend
    /// ([`Sinogram::without_end_trend`]); the filter is not used.
    Sirt(Sirt),
}

/// [`reconstruct`] or [`sirt`], as `how` says.
pub fn reconstruct_as(
    sinogram: &Sinogram,
    filter: &Filter,
    how: &Reconstruction,
    grid: &Grid,
) -> Result<Vec<f32>> {
    match how {
        Reconstruction::Fbp => reconstruct(sinogram, filter, grid),
        Reconstruction::Sirt(options) => {
            Ok(sirt(&sinogram.without_end_trend(), grid, options)?.values)
        }
    }
}

/// A volume reconstructed from its own plane integrals: the forward
/// transform with slices, then the inverse onto the volume's grid.
pub fn reconstruct_volume(
    volume: &Volume,
    channel: usize,
    geometry: &Arc<TomoGeometry>,
    filter: &Filter,
) -> Result<Volume> {
    let sino = plane_integrals(volume, channel, geometry);
    let data = reconstruct(&sino, filter, &volume.grid())?;
    volume.same_grid(data)
}

/// One direction's slice stack, `(S, P, P)` laid out `[t][b][a]`, to be
/// resampled onto a grid by [`backproject_stack`].
#[derive(Debug, Clone)]
pub struct Stack<'a> {
    pub direction: usize,
    pub values: &'a [f32],
}

/// Adds `scale * C_k(t_k(x), a_k(x), b_k(x))` for each given stack to `out`
/// (on `grid`): trilinear interpolation in `(t, a, b)`, 0 outside the stack.
/// With unfiltered stacks and `scale = 1/K` over all K directions this is
/// the Averaged CAM; with stacks filtered along `t` and `scale = -1/(2 pi K)`,
/// the Tomographic CAM (docs/METHOD.md section 5).
pub fn backproject_stack(
    geometry: &TomoGeometry,
    stacks: &[Stack<'_>],
    grid: &Grid,
    scale: f32,
    out: &mut [f32],
) {
    let (s, p) = (geometry.slices, geometry.pixels);
    assert_eq!(
        out.len(),
        grid.voxels(),
        "backproject_stack: output matches the grid"
    );
    for st in stacks {
        assert_eq!(
            st.values.len(),
            s * p * p,
            "backproject_stack: each stack is S*P*P"
        );
    }
    let rho = geometry.ball.radius_mm;
    let (dt, da) = (geometry.dt_mm(), geometry.pixel_mm());
    let a = &grid.world_from_voxel;
    let origin = sub(a.origin(), geometry.ball.center_mm);
    // Stack coordinates (a, b, t) in index units are affine in (i, j, l).
    let coefs: Vec<[[f64; 4]; 3]> = stacks
        .iter()
        .map(|st| {
            let f = &geometry.frames[st.direction];
            let axes = [(f.u, da), (f.v, da), (f.n, dt)];
            axes.map(|(e, h)| {
                [
                    (dot(origin, e) + rho) / h,
                    dot(a.column(0), e) / h,
                    dot(a.column(1), e) / h,
                    dot(a.column(2), e) / h,
                ]
            })
        })
        .collect();
    let [nx, ny, _] = grid.shape;
    out.par_chunks_mut(nx).enumerate().for_each_init(
        || vec![0.0f32; nx],
        |tmp, (row, acc)| {
            let (j, l) = ((row % ny) as f64, (row / ny) as f64);
            for (st, c) in stacks.iter().zip(&coefs) {
                let p0 = c.map(|ci| ci[0] + j * ci[2] + l * ci[3]);
                let step = c.map(|ci| ci[1]);
                sample_line(st.values, [p, p, s], p0, step, 0.0, tmp);
                for (a, t) in acc.iter_mut().zip(tmp.iter()) {
                    *a += scale * t;
                }
            }
        },
    );
}

/// Filters every `P x P` pixel column of a stack along `t` (the same filter
/// as the profiles), for the Tomographic CAM. `stack` is `(S, P, P)`.
pub fn filter_stack(
    geometry: &Arc<TomoGeometry>,
    filter: &Filter,
    stack: &[f32],
) -> Result<Vec<f32>> {
    let (s, p) = (geometry.slices, geometry.pixels);
    let pp = p * p;
    if stack.len() != s * pp {
        return Err(Error::Shape {
            what: "slice stack".into(),
            expected: format!("{s} x {p} x {p}"),
            got: format!("{} values", stack.len()),
        });
    }
    // Treat each pixel's t-profile as one "direction" of a sinogram.
    let mut columns = vec![0.0f32; s * pp];
    for j in 0..s {
        for q in 0..pp {
            columns[q * s + j] = stack[j * pp + q];
        }
    }
    let g = Arc::new(TomoGeometry {
        frames: vec![geometry.frames[0]; pp],
        ..(**geometry).clone()
    });
    let filtered = filter.apply(&Sinogram::new(g, columns)?)?;
    let mut out = vec![0.0f32; s * pp];
    for j in 0..s {
        for q in 0..pp {
            out[j * pp + q] = filtered.values[q * s + j];
        }
    }
    Ok(out)
}

mod sirt;
pub use sirt::{Sirt, SirtOutcome, sirt};

#[cfg(test)]
mod tests;
