//! The body mask that `tonno segment` restricts heatmaps to: it must hold
//! every lesion voxel of the synthetic phantoms (bright and dark lesions,
//! near the head's edge too) and leave out the air around the head.

use tonno_core::normalize::{BODY_MARGIN_VOXELS, body_mask};
use tonno_core::synth::{SynthConfig, generate_case};

#[test]
fn the_body_mask_keeps_every_lesion_voxel_and_drops_the_air() {
    let config = SynthConfig {
        size: 32,
        // Both signs of contrast, strong enough to carve dark holes.
        contrast: (0.2, 0.6),
        seed: 11,
        ..SynthConfig::default()
    };
    let mut lesion_voxels = 0;
    for index in 0..24 {
        let case = generate_case(&config, index, true, false).unwrap();
        let body = body_mask(&case.image, BODY_MARGIN_VOXELS);
        for (i, (&m, &b)) in case.mask.data().iter().zip(&body).enumerate() {
            assert!(
                m <= 0.0 || b,
                "case {index}: lesion voxel {i} outside the body"
            );
            lesion_voxels += (m > 0.0) as usize;
        }
        // The grid's corners are air.
        let n = config.size;
        for (i, j, k) in [(0, 0, 0), (n - 1, n - 1, n - 1), (0, n - 1, 0)] {
            assert!(
                !body[i + n * (j + n * k)],
                "case {index}: corner in the body"
            );
        }
        let share = body.iter().filter(|&&b| b).count() as f64 / body.len() as f64;
        assert!(
            (0.05..0.8).contains(&share),
            "case {index}: body is {share:.2} of the grid"
        );
    }
    assert!(
        lesion_voxels > 500,
        "only {lesion_voxels} lesion voxels tested"
    );
}
