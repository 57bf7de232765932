//! Options shared by every command that slices a volume at many
//! orientations and reconstructs from the slices.

use std::sync::Arc;

use clap::ValueEnum;
use tonno_core::geometry::{Ball, TomoGeometry};
use tonno_core::radon::{Filter, FilterKind, Padding, Reconstruction, Sirt, Window};
use tonno_core::volume::Volume;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FilterArg {
    /// -omega^2 W(omega) by FFT.
    Spectral,
    /// (g[j+1] - 2 g[j] + g[j-1]) / dt^2.
    CentralDifference,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WindowArg {
    None,
    Hann,
    SheppLogan,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PaddingArg {
    /// Repeat the end values (right for network outputs).
    Edge,
    /// Zeros (right for plane integrals of a volume).
    Zero,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReconstructionArg {
    /// Filtered backprojection (the second derivative along t).
    Fbp,
    /// SIRT, non-negative, `--iterations` steps (ToNNO only: the
    /// tomographic CAMs always backproject).
    Sirt,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TomoArgs {
    /// Number of directions K (Fibonacci hemisphere).
    #[arg(long, default_value_t = 128)]
    pub directions: usize,
    /// Slices per direction S (default: the ball's diameter over the finest spacing).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Pixels per slice side P (default: as --slices).
    #[arg(long)]
    pub pixels: Option<usize>,
    /// Second-derivative filter along t.
    #[arg(long, value_enum, default_value_t = FilterArg::Spectral)]
    pub filter: FilterArg,
    /// Apodising window of the spectral filter.
    #[arg(long, value_enum, default_value_t = WindowArg::Hann)]
    pub window: WindowArg,
    /// Window cutoff as a fraction of the Nyquist frequency, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub cutoff: f64,
    /// How profiles are extended past their ends before filtering.
    #[arg(long, value_enum)]
    pub padding: Option<PaddingArg>,
    /// Ball centre in world mm, "x,y,z" (default: the volume's centre).
    #[arg(long, value_parser = parse_point)]
    pub center: Option<[f64; 3]>,
    /// Ball radius in mm (default: half the field of view's diagonal).
    #[arg(long)]
    pub radius: Option<f64>,
    /// In-plane rotation of every slice frame, in degrees.
    #[arg(long, default_value_t = 0.0)]
    pub rotation: f64,
    /// How the profiles become a volume.
    #[arg(long, value_enum, default_value_t = ReconstructionArg::Fbp)]
    pub reconstruction: ReconstructionArg,
    /// SIRT iterations (with `--reconstruction sirt`).
    #[arg(long, default_value_t = Sirt::default().iterations)]
    pub iterations: usize,
}

fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .map_err(|_| format!("{x:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    <[f64; 3]>::try_from(v).map_err(|_| "expected three numbers: x,y,z".to_string())
}

impl TomoArgs {
    /// The reconstruction, its options checked.
    pub fn reconstruction(&self) -> tonno_core::Result<Reconstruction> {
        Ok(match self.reconstruction {
            ReconstructionArg::Fbp => Reconstruction::Fbp,
            ReconstructionArg::Sirt => {
                let sirt = Sirt {
                    iterations: self.iterations,
                    ..Sirt::default()
                };
                sirt.validate()?;
                Reconstruction::Sirt(sirt)
            }
        })
    }

    /// The filter, with `default_padding` when the user did not choose one.
    pub fn filter(&self, default_padding: Padding) -> Filter {
        Filter {
            kind: match self.filter {
                FilterArg::Spectral => FilterKind::Spectral,
                FilterArg::CentralDifference => FilterKind::CentralDifference,
            },
            window: match self.window {
                WindowArg::None => Window::None,
                WindowArg::Hann => Window::Hann,
                WindowArg::SheppLogan => Window::SheppLogan,
            },
            cutoff: self.cutoff,
            padding: match self.padding {
                Some(PaddingArg::Edge) => Padding::Edge,
                Some(PaddingArg::Zero) => Padding::Zero,
                None => default_padding,
            },
        }
    }

    /// The geometry for `volume`.
    pub fn geometry(&self, volume: &Volume) -> anyhow::Result<Arc<TomoGeometry>> {
        let mut ball = Ball::covering(volume);
        if let Some(c) = self.center {
            ball.center_mm = c;
        }
        if let Some(r) = self.radius {
            anyhow::ensure!(
                r > 0.0 && r.is_finite(),
                "--radius must be a positive number of mm"
            );
            ball.radius_mm = r;
        }
        let finest = volume
            .spacing_mm()
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        let auto = ((2.0 * ball.radius_mm / finest).ceil() as usize + 1).clamp(16, 512);
        let slices = self.slices.unwrap_or(auto);
        let pixels = self.pixels.or(self.slices).unwrap_or(auto);
        Ok(Arc::new(TomoGeometry::fibonacci(
            ball,
            self.directions,
            slices,
            pixels,
            self.rotation.to_radians(),
        )?))
    }
}
