//! `Volume`: f32 voxels, channels and the voxel-to-world affine, kept together.
//!
//! Axis order: voxel `(i, j, k)` and channel `c` live at
//! `data[i + nx * (j + ny * (k + nz * c))]`, i.e. `i` fastest, as NIfTI and
//! NRRD store them on disk. World coordinates are RAS+ millimetres
//! (see [`crate::affine`]).

use crate::affine::{Affine, Vec3, norm, sub};
use crate::error::{Error, Result};

/// A 3D image with one or more channels (e.g. MRI sequences) and its
/// geometry. Its `Debug` shows shape, spacing and orientation, never voxels.
#[derive(Clone)]
pub struct Volume {
    data: Vec<f32>,
    shape: [usize; 3],
    channels: usize,
    world_from_voxel: Affine,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.spacing_mm();
        write!(
            f,
            "Volume(shape={:?}, channels={}, spacing_mm=[{:.3}, {:.3}, {:.3}], orientation={})",
            self.shape,
            self.channels,
            s[0],
            s[1],
            s[2],
            self.world_from_voxel.orientation_code()
        )
    }
}

impl Volume {
    /// Wraps voxels in the layout described in the module docs.
    ///
    /// Errors when `data.len() != nx * ny * nz * channels`, when a dimension
    /// or the channel count is zero, or when the affine is singular or not finite.
    pub fn new(
        data: Vec<f32>,
        shape: [usize; 3],
        channels: usize,
        world_from_voxel: Affine,
    ) -> Result<Self> {
        if shape.contains(&0) || channels == 0 {
            return Err(Error::invalid(
                "volume shape",
                format!("{shape:?} with {channels} channel(s) has no voxels"),
            ));
        }
        let expected = shape
            .iter()
            .try_fold(channels, |acc, &n| acc.checked_mul(n))
            .ok_or_else(|| Error::invalid("volume shape", format!("{shape:?} is too large")))?;
        if data.len() != expected {
            return Err(Error::Shape {
                what: "volume data".into(),
                expected: format!("{expected} values for {shape:?} x {channels} channel(s)"),
                got: format!("{} values", data.len()),
            });
        }
        if !world_from_voxel.is_valid() {
            return Err(Error::invalid(
                "affine",
                format!("not an invertible finite affine:\n{world_from_voxel}"),
            ));
        }
        Ok(Self {
            data,
            shape,
            channels,
            world_from_voxel,
        })
    }

    /// A single-channel volume filled with `value`.
    pub fn filled(shape: [usize; 3], world_from_voxel: Affine, value: f32) -> Result<Self> {
        let n = shape.iter().product();
        Self::new(vec![value; n], shape, 1, world_from_voxel)
    }

    /// Builds a single-channel volume by evaluating `f(i, j, k)` at every voxel.
    pub fn from_fn(
        shape: [usize; 3],
        world_from_voxel: Affine,
        mut f: impl FnMut(usize, usize, usize) -> f32,
    ) -> Result<Self> {
        let mut data = Vec::with_capacity(shape.iter().product());
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    data.push(f(i, j, k));
                }
            }
        }
        Self::new(data, shape, 1, world_from_voxel)
    }

    /// Voxel counts `[nx, ny, nz]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Voxels per channel.
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }

    /// The voxel-to-world (RAS mm) affine.
    pub fn world_from_voxel(&self) -> &Affine {
        &self.world_from_voxel
    }

    /// Replaces the affine (the voxels stay as they are).
    pub fn with_affine(mut self, world_from_voxel: Affine) -> Result<Self> {
        if !world_from_voxel.is_valid() {
            return Err(Error::invalid(
                "affine",
                format!("not an invertible finite affine:\n{world_from_voxel}"),
            ));
        }
        self.world_from_voxel = world_from_voxel;
        Ok(self)
    }

    /// World-to-voxel affine.
    pub fn voxel_from_world(&self) -> Affine {
        // `new` and `with_affine` only accept invertible affines.
        self.world_from_voxel
            .inverse()
            .expect("Volume's affine is invertible by construction")
    }

    /// Voxel spacing in mm along `i`, `j`, `k`.
    pub fn spacing_mm(&self) -> Vec3 {
        self.world_from_voxel.spacing_mm()
    }

    /// All voxels, channel after channel.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable voxels, channel after channel.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the volume, returning its voxels.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The voxels of one channel.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.voxels();
        &self.data[c * n..(c + 1) * n]
    }

    /// One channel as a single-channel volume with the same geometry.
    pub fn channel_volume(&self, c: usize) -> Volume {
        Volume {
            data: self.channel(c).to_vec(),
            shape: self.shape,
            channels: 1,
            world_from_voxel: self.world_from_voxel,
        }
    }

    /// A volume on the same grid with new voxel values (one channel).
    pub fn same_grid(&self, data: Vec<f32>) -> Result<Volume> {
        Volume::new(data, self.shape, 1, self.world_from_voxel)
    }

    /// Linear index of voxel `(i, j, k)` in channel `c`.
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize, c: usize) -> usize {
        i + self.shape[0] * (j + self.shape[1] * (k + self.shape[2] * c))
    }

    /// Value at voxel `(i, j, k)`, channel `c`.
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize, c: usize) -> f32 {
        self.data[self.index(i, j, k, c)]
    }

    /// World position (mm) of a voxel coordinate.
    pub fn voxel_to_world(&self, voxel: Vec3) -> Vec3 {
        self.world_from_voxel.apply(voxel)
    }

    /// Voxel coordinate of a world position (mm).
    pub fn world_to_voxel(&self, world: Vec3) -> Vec3 {
        self.voxel_from_world().apply(world)
    }

    /// World position of the grid's centre (the midpoint of the corner voxel centres).
    pub fn center_mm(&self) -> Vec3 {
        let c = self.shape.map(|n| (n as f64 - 1.0) / 2.0);
        self.voxel_to_world(c)
    }

    /// Half the diagonal of the field of view (`n * spacing` per axis), in mm:
    /// the radius of the smallest ball centred on the grid that holds every voxel.
    pub fn half_diagonal_mm(&self) -> f64 {
        let s = self.spacing_mm();
        let d2: f64 = (0..3).map(|a| (self.shape[a] as f64 * s[a]).powi(2)).sum();
        d2.sqrt() / 2.0
    }

    /// Trilinear interpolation of channel `c` at a world point. Outside the
    /// grid, the missing neighbours take the value `background`, so values
    /// fade to `background` over one voxel beyond the last voxel centre.
    pub fn sample_world(&self, world: Vec3, c: usize, background: f32) -> f32 {
        self.sample_voxel(self.world_to_voxel(world), c, background)
    }

    /// Trilinear interpolation at a (fractional) voxel coordinate; see
    /// [`Volume::sample_world`].
    pub fn sample_voxel(&self, p: Vec3, c: usize, background: f32) -> f32 {
        trilinear_padded(self.channel(c), self.shape, p, background)
    }

    /// Minimum and maximum over all channels.
    pub fn intensity_range(&self) -> (f32, f32) {
        self.data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// The first non-finite voxel, as `(count, [i, j, k], channel)`, if any.
    pub fn find_non_finite(&self) -> Option<(usize, [usize; 3], usize)> {
        let count = self.data.iter().filter(|v| !v.is_finite()).count();
        if count == 0 {
            return None;
        }
        let first = self.data.iter().position(|v| !v.is_finite())?;
        let n = self.voxels();
        let c = first / n;
        let r = first % n;
        let (nx, ny) = (self.shape[0], self.shape[1]);
        Some((count, [r % nx, (r / nx) % ny, r / (nx * ny)], c))
    }

    /// Distance in mm between the centres of voxels `a` and `b`.
    pub fn distance_mm(&self, a: Vec3, b: Vec3) -> f64 {
        norm(sub(self.voxel_to_world(a), self.voxel_to_world(b)))
    }
}

/// Trilinear interpolation in a `[nx, ny, nz]` grid (i fastest) with
/// `background` outside.
pub(crate) fn trilinear_padded(data: &[f32], shape: [usize; 3], p: Vec3, background: f32) -> f32 {
    let [nx, ny, nz] = shape;
    let fl = [p[0].floor(), p[1].floor(), p[2].floor()];
    if fl[0] < -1.0
        || fl[1] < -1.0
        || fl[2] < -1.0
        || fl[0] >= nx as f64
        || fl[1] >= ny as f64
        || fl[2] >= nz as f64
    {
        return background;
    }
    let f = [
        (p[0] - fl[0]) as f32,
        (p[1] - fl[1]) as f32,
        (p[2] - fl[2]) as f32,
    ];
    let base = [fl[0] as i64, fl[1] as i64, fl[2] as i64];
    let at = |di: i64, dj: i64, dk: i64| -> f32 {
        let (i, j, k) = (base[0] + di, base[1] + dj, base[2] + dk);
        if i < 0 || j < 0 || k < 0 || i >= nx as i64 || j >= ny as i64 || k >= nz as i64 {
            background
        } else {
            data[i as usize + nx * (j as usize + ny * k as usize)]
        }
    };
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let c00 = lerp(at(0, 0, 0), at(1, 0, 0), f[0]);
    let c10 = lerp(at(0, 1, 0), at(1, 1, 0), f[0]);
    let c01 = lerp(at(0, 0, 1), at(1, 0, 1), f[0]);
    let c11 = lerp(at(0, 1, 1), at(1, 1, 1), f[0]);
    lerp(lerp(c00, c10, f[1]), lerp(c01, c11, f[1]), f[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Volume {
        // f = 2i + 3j - k + 1 is linear, so trilinear interpolation is exact inside.
        let aff = Affine::from_diagonal([0.5, 2.0, -1.5], [10.0, -4.0, 7.0]);
        Volume::from_fn([5, 4, 6], aff, |i, j, k| {
            2.0 * i as f32 + 3.0 * j as f32 - k as f32 + 1.0
        })
        .unwrap()
    }

    #[test]
    fn new_rejects_wrong_length_and_zero_dims() {
        assert!(matches!(
            Volume::new(vec![0.0; 7], [2, 2, 2], 1, Affine::identity()),
            Err(Error::Shape { .. })
        ));
        assert!(Volume::new(vec![], [0, 2, 2], 1, Affine::identity()).is_err());
        let singular = Affine::from_diagonal([1.0, 1.0, 0.0], [0.0; 3]);
        assert!(Volume::new(vec![0.0; 8], [2, 2, 2], 1, singular).is_err());
    }

    #[test]
    fn trilinear_is_exact_on_linear_functions_in_world_coordinates() {
        let v = ramp();
        for p in [[0.25, 1.5, 2.75], [3.9, 0.1, 4.5], [2.0, 2.0, 2.0]] {
            let w = v.voxel_to_world(p);
            let want = 2.0 * p[0] + 3.0 * p[1] - p[2] + 1.0;
            let got = v.sample_world(w, 0, f32::NAN) as f64;
            assert!((got - want).abs() < 1e-4, "{p:?}: {got} vs {want}");
        }
    }

    #[test]
    fn sampling_at_voxel_centres_returns_voxels_and_background_far_away() {
        let v = ramp();
        assert_eq!(v.sample_voxel([4.0, 3.0, 5.0], 0, -9.0), v.get(4, 3, 5, 0));
        assert_eq!(v.sample_voxel([-1.5, 0.0, 0.0], 0, -9.0), -9.0);
        assert_eq!(v.sample_voxel([0.0, 4.2, 0.0], 0, -9.0), -9.0);
        // Half a voxel outside: halfway between the edge voxel and the background.
        let half = v.sample_voxel([-0.5, 0.0, 0.0], 0, 0.0);
        assert!((half - v.get(0, 0, 0, 0) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn centre_and_half_diagonal() {
        let v = Volume::filled(
            [10, 20, 30],
            Affine::from_diagonal([1.0, 1.0, 2.0], [0.0; 3]),
            0.0,
        )
        .unwrap();
        assert_eq!(v.center_mm(), [4.5, 9.5, 29.0]);
        let want = (10f64.powi(2) + 20f64.powi(2) + 60f64.powi(2)).sqrt() / 2.0;
        assert!((v.half_diagonal_mm() - want).abs() < 1e-12);
    }

    #[test]
    fn finds_non_finite_voxels() {
        let mut v = ramp();
        assert!(v.find_non_finite().is_none());
        let idx = v.index(1, 2, 3, 0);
        v.data_mut()[idx] = f32::NAN;
        assert_eq!(v.find_non_finite(), Some((1, [1, 2, 3], 0)));
    }
}
