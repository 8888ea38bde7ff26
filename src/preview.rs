//! Predicted frames as RGB8 images for rviz: one image per camera and predicted step, one tiled preview
//! (per camera row: the newest observed frame, then the predicted ones; with the monitor on, below
//! them per camera the last scored chunk's predicted frames above the real frames taken at their
//! times: imagination against reality), and the monitor's pairs alone. Buffers are sized once.

use crate::bundle::Dims;

#[inline]
fn to_u8(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Writes one CHW frame in [0, 1] as packed HWC RGB8 into `out`, at row stride `stride` bytes.
fn chw_to_rgb8(chw: &[f32], h: usize, w: usize, out: &mut [u8], stride: usize) {
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let o = y * stride + x * 3;
            out[o] = to_u8(chw[i]);
            out[o + 1] = to_u8(chw[plane + i]);
            out[o + 2] = to_u8(chw[2 * plane + i]);
        }
    }
}

pub struct PreviewImages {
    dims: Dims,
    /// [V * F] RGB8 frames, each of its camera's size.
    pub predicted: Vec<Vec<u8>>,
    /// V rows x (1 + F) columns of tiles, then (monitor) 2V rows of the pairs from column 1. A tile is
    /// the largest camera's size; a smaller camera's frames sit in its top-left corner, on black.
    pub tiled: Vec<u8>,
    /// 2V rows (predicted, then observed, per camera) x F columns of tiles.
    pub monitor_tiled: Vec<u8>,
    image_mean: [f32; 3],
    image_std: [f32; 3],
}

impl PreviewImages {
    pub fn new(dims: Dims, image_mean: [f32; 3], image_std: [f32; 3]) -> Self {
        let (th, tw) = dims.max_size();
        let tile = th * tw * 3;
        PreviewImages {
            predicted: (0..dims.cameras * dims.video_frames)
                .map(|i| {
                    let (h, w) = dims.size(i / dims.video_frames.max(1));
                    vec![0; h * w * 3]
                })
                .collect(),
            tiled: vec![0; 3 * dims.cameras * (1 + dims.video_frames) * tile],
            monitor_tiled: vec![0; 2 * dims.cameras * dims.video_frames * tile],
            dims,
            image_mean,
            image_std,
        }
    }

    /// (height, width) of the tiled preview; `monitor`: with the monitor's rows.
    pub fn tiled_size(&self, monitor: bool) -> (usize, usize) {
        let (th, tw) = self.dims.max_size();
        let rows = if monitor { 3 } else { 1 } * self.dims.cameras;
        (rows * th, (1 + self.dims.video_frames) * tw)
    }

    /// The tiled preview's bytes (`tiled_size(monitor)`).
    pub fn tiled(&self, monitor: bool) -> &[u8] {
        let (h, w) = self.tiled_size(monitor);
        &self.tiled[..h * w * 3]
    }

    pub fn monitor_size(&self) -> (usize, usize) {
        let (th, tw) = self.dims.max_size();
        (2 * self.dims.cameras * th, self.dims.video_frames * tw)
    }

    /// Writes a normalized CHW frame, un-normalized to [0, 1], as RGB8 (black when `shown` is false).
    fn write_observed(
        &self,
        obs: &[f32],
        h: usize,
        w: usize,
        shown: bool,
        out: &mut [u8],
        stride: usize,
    ) {
        let plane = h * w;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let value = obs[c * plane + y * w + x] * self.image_std[c] + self.image_mean[c];
                    out[y * stride + x * 3 + c] = if shown { to_u8(value) } else { 0 };
                }
            }
        }
    }

    /// The monitor's pairs: `predicted` [V, F] frames in [0, 1] (NaN without decode: black),
    /// `observed` [V, F] frames normalized, `observed_stamps` [V, F] (NaN: none paired, black).
    pub fn update_monitor(&mut self, predicted: &[f32], observed: &[f32], observed_stamps: &[f64]) {
        let d = self.dims;
        let ((th, tw), nf) = (d.max_size(), d.video_frames);
        let stride = nf * tw * 3;
        let mut tiles = std::mem::take(&mut self.monitor_tiled);
        for v in 0..d.cameras {
            let (h, w) = d.size(v);
            for f in 0..nf {
                let i = v * nf + f;
                let top = (2 * v) * th * stride + f * tw * 3;
                let bottom = (2 * v + 1) * th * stride + f * tw * 3;
                let range = d.predicted_frame(v, f);
                chw_to_rgb8(&predicted[range.clone()], h, w, &mut tiles[top..], stride);
                let paired = !observed_stamps[i].is_nan();
                self.write_observed(&observed[range], h, w, paired, &mut tiles[bottom..], stride);
            }
        }
        self.monitor_tiled = tiles;
        // The same pairs under the preview's rows, from its column 1 (under the predicted frames).
        let tiled_stride = (1 + nf) * tw * 3;
        let first_row = d.cameras * th;
        for row in 0..2 * d.cameras * th {
            let src = &self.monitor_tiled[row * stride..(row + 1) * stride];
            let dst = (first_row + row) * tiled_stride + tw * 3;
            self.tiled[dst..dst + stride].copy_from_slice(src);
        }
    }

    pub fn frame(&self, camera: usize, step: usize) -> &[u8] {
        &self.predicted[camera * self.dims.video_frames + step]
    }

    /// `predicted`: [V, F] frames in [0, 1]; `observed`: the model input [V, T] frames, normalized.
    pub fn update(&mut self, predicted: &[f32], observed: &[f32]) {
        let d = self.dims;
        let (th, tw) = d.max_size();
        let stride = (1 + d.video_frames) * tw * 3;
        let mut tiled = std::mem::take(&mut self.tiled);
        for v in 0..d.cameras {
            let (h, w) = d.size(v);
            let row = &mut tiled[v * th * stride..(v + 1) * th * stride];
            // Newest observed frame, un-normalized back to [0, 1].
            let obs = &observed[d.obs_frame(v, d.context_frames - 1)];
            self.write_observed(obs, h, w, true, row, stride);
            for f in 0..d.video_frames {
                let src = &predicted[d.predicted_frame(v, f)];
                chw_to_rgb8(
                    src,
                    h,
                    w,
                    &mut self.predicted[v * d.video_frames + f],
                    w * 3,
                );
                chw_to_rgb8(src, h, w, &mut row[(1 + f) * tw * 3..], stride);
            }
        }
        self.tiled = tiled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_observed_then_predicted_per_camera() {
        let dims = Dims {
            cameras: 2,
            context_frames: 1,
            sizes: crate::bundle::same_size(1, 2),
            state: 1,
            horizon: 1,
            action: 1,
            video_frames: 1,
            latent: [1, 1, 1],
            tokens: 1,
        };
        let mut p = PreviewImages::new(dims, [0.5; 3], [0.5; 3]);
        // Observed (normalized): camera 0 all 1.0 -> pixel 1.0 -> 255; camera 1 all -1.0 -> 0.
        let observed: Vec<f32> = [vec![1.0; 6], vec![-1.0; 6]].concat();
        let predicted: Vec<f32> = [vec![0.2; 6], vec![0.6; 6]].concat();
        p.update(&predicted, &observed);
        assert_eq!(p.tiled_size(false), (2, 4));
        assert_eq!(
            &p.tiled(false)[..12],
            &[255, 255, 255, 255, 255, 255, 51, 51, 51, 51, 51, 51]
        );
        assert_eq!(
            &p.tiled(false)[12..],
            &[0, 0, 0, 0, 0, 0, 153, 153, 153, 153, 153, 153]
        );
        assert_eq!(p.frame(1, 0), &[153; 6]);
    }

    #[test]
    fn monitor_tiles_predicted_above_observed_and_blanks_the_unpaired() {
        let dims = Dims {
            cameras: 1,
            context_frames: 1,
            sizes: crate::bundle::same_size(1, 1),
            state: 1,
            horizon: 1,
            action: 1,
            video_frames: 2,
            latent: [1, 1, 1],
            tokens: 1,
        };
        let mut p = PreviewImages::new(dims, [0.5; 3], [0.5; 3]);
        let predicted = [0.2f32, 0.2, 0.2, 0.6, 0.6, 0.6];
        let observed = [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0];
        p.update_monitor(&predicted, &observed, &[10.0, f64::NAN]);
        assert_eq!(p.monitor_size(), (2, 2));
        assert_eq!(
            p.monitor_tiled,
            [51, 51, 51, 153, 153, 153, 255, 255, 255, 0, 0, 0]
        );
        // In the preview: rows 1 and 2 (under the camera's row), from column 1.
        assert_eq!(p.tiled_size(true), (3, 3));
        let t = p.tiled(true);
        assert_eq!(&t[9 + 3..9 + 9], &[51, 51, 51, 153, 153, 153]);
        assert_eq!(&t[18 + 3..18 + 9], &[255, 255, 255, 0, 0, 0]);
        assert_eq!(&t[9..12], &[0, 0, 0], "column 0 stays blank");
    }
}
