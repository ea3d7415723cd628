//! The built-in synthetic dataset: 10 classes of 32x32 RGB images drawn procedurally,
//! deterministic from a seed.
//!
//! Each image has a random background colour with a gradient, a shape or texture in a random
//! foreground colour (so colour says nothing about the class), random position, size and
//! rotation, sometimes a distracting stroke, and pixel noise. Classes: 0 disc, 1 ring,
//! 2 square, 3 triangle, 4 plus, 5 cross (a plus turned by about 45°), 6 horizontal stripes,
//! 7 vertical stripes, 8 checkerboard, 9 ellipse. Disc vs. ellipse and plus vs. cross are
//! deliberately confusable, so that weak models have weak classes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::ImageSet;
use crate::seed::mix_seed;

/// Class names of the synthetic dataset.
pub const CLASS_NAMES: [&str; 10] =
    ["disc", "ring", "square", "triangle", "plus", "cross", "hstripes", "vstripes", "checker", "ellipse"];

const SIDE: usize = 32;

/// `n` images, image `i` of class `i % 10`, drawn from `seed` (in parallel; the result does not
/// depend on the thread count).
pub fn generate(n: usize, seed: u64) -> ImageSet {
    let per = 3 * SIDE * SIDE;
    let mut pixels = vec![0u8; n * per];
    pixels.par_chunks_mut(per).enumerate().for_each(|(i, out)| draw(i % 10, mix_seed(seed, i as u64), out));
    ImageSet { shape: [3, SIDE, SIDE], pixels, labels: (0..n).map(|i| (i % 10) as u16).collect() }
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

/// Draws one image of `class` into `out` (`[3, 32, 32]` bytes).
fn draw(class: usize, seed: u64, out: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bg = random_colour(&mut rng);
    let mut fg = random_colour(&mut rng);
    for _ in 0..20 {
        if (luminance(fg) - luminance(bg)).abs() >= 0.25 {
            break;
        }
        fg = random_colour(&mut rng);
    }
    if (luminance(fg) - luminance(bg)).abs() < 0.25 {
        fg = bg.map(|v| 1.0 - v);
    }
    let gradient_angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let gradient = [rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.15)];
    let cx = 16.0 + rng.random_range(-5.0..5.0f32);
    let cy = 16.0 + rng.random_range(-5.0..5.0f32);
    let r = rng.random_range(7.0..11.0f32);
    let thickness = rng.random_range(1.3..2.4f32);
    let jitter = rng.random_range(-0.4..0.4f32);
    let period = rng.random_range(5.0..9.0f32);
    let phase = rng.random_range(0.0..std::f32::consts::TAU);
    let aspect = rng.random_range(0.55..0.85f32);
    let free_angle = rng.random_range(0.0..std::f32::consts::PI);
    let angle = match class {
        5 => std::f32::consts::FRAC_PI_4 + jitter,
        7 => std::f32::consts::FRAC_PI_2 + jitter,
        9 => free_angle,
        _ => jitter,
    };
    let (sin, cos) = angle.sin_cos();
    // A distracting stroke in a third colour on some images.
    let stroke = (rng.random::<f32>() < 0.3).then(|| {
        let a = (rng.random_range(0.0..32.0f32), rng.random_range(0.0..32.0f32));
        let b = (rng.random_range(0.0..32.0f32), rng.random_range(0.0..32.0f32));
        (a, b, random_colour(&mut rng))
    });
    let noise = rng.random_range(0.02..0.08f32);
    let normal = rand_distr::Normal::new(0.0f32, 1.0).expect("valid normal");

    let (gs, gc) = gradient_angle.sin_cos();
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = (px - cx, py - cy);
            // Shape coordinates: rotated by `angle` around the centre.
            let u = cos * dx + sin * dy;
            let v = -sin * dx + cos * dy;
            let dist = (dx * dx + dy * dy).sqrt();
            let d = match class {
                0 => dist - r,
                1 => (dist - r).abs() - thickness,
                2 => u.abs().max(v.abs()) - r * 0.8,
                3 => {
                    // Equilateral triangle pointing up (-v), circumradius r.
                    let k = 3f32.sqrt();
                    let e1 = v - r * 0.5;
                    let e2 = (k * u - v) * 0.5 - r * 0.5;
                    let e3 = (-k * u - v) * 0.5 - r * 0.5;
                    e1.max(e2).max(e3)
                }
                4 | 5 => (u.abs() - r).max(v.abs() - thickness).min((v.abs() - r).max(u.abs() - thickness)),
                6 | 7 => {
                    // Stripes across the whole image: distance to the nearest stripe edge.
                    let s = (std::f32::consts::TAU * v / period + phase).sin();
                    -s * period / 4.0
                }
                8 => {
                    let s =
                        (std::f32::consts::TAU * u / period + phase).sin() * (std::f32::consts::TAU * v / period).sin();
                    -s * period / 4.0
                }
                _ => {
                    let (a, b) = (r, r * aspect);
                    ((u / a).powi(2) + (v / b).powi(2)).sqrt() * b - b
                }
            };
            let alpha = (0.5 - d).clamp(0.0, 1.0);
            let (beta, stroke_colour) = match stroke {
                Some(((ax, ay), (bx, by), c)) => {
                    let (ex, ey) = (bx - ax, by - ay);
                    let t = (((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey).max(1e-6)).clamp(0.0, 1.0);
                    let sd = ((px - ax - t * ex).powi(2) + (py - ay - t * ey).powi(2)).sqrt() - 0.8;
                    ((0.5 - sd).clamp(0.0, 1.0), c)
                }
                None => (0.0, fg),
            };
            let g = ((px - 16.0) * gc + (py - 16.0) * gs) / 16.0;
            for ch in 0..3 {
                let back = bg[ch] + gradient[ch] * g;
                let shape = back * (1.0 - alpha) + fg[ch] * alpha;
                let value = shape * (1.0 - beta) + stroke_colour[ch] * beta + noise * rng.sample(normal);
                out[(ch * SIDE + y) * SIDE + x] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}
