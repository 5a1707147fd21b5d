//! The RealNVP bijector that acts on one block (spec section 2, "The RealNVP block").
//!
//! A stack of affine coupling layers on the `w` values of a block (`w = 4` in 2D, 2 in 1D).
//! Layer `n` keeps the entries where its mask `b` is 1 and transforms the others:
//! generate `y <- y * exp(s) + t`, infer `y <- (y - t) * exp(-s)`, with
//! `s = w_s * tanh(S(b*y)) * (1-b)`, `t = T(b*y) * (1-b)`. The scale `w_s` starts at zero, so a
//! fresh flow is volume preserving.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, activation, backend::Backend};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Architecture of one RealNVP block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealNvpConfig {
    /// Number of values in a block: 4 (2x2 patch, 2D) or 2 (pair, 1D).
    pub width: usize,
    /// Number of affine coupling layers (`nlayers`).
    pub nlayers: usize,
    /// Number of hidden layers of each MLP `S` and `T` (`nmlp`).
    pub nmlp: usize,
    /// Width of the hidden layers (`nhidden`).
    pub nhidden: usize,
}

impl RealNvpConfig {
    /// Number of trainable parameters of one block:
    /// `nlayers * (2 * (wH + H + (nmlp-1)(H^2 + H) + wH + w) + w)`.
    pub fn num_params(&self) -> usize {
        let (w, h) = (self.width, self.nhidden);
        let mlp = w * h + h + (self.nmlp - 1) * (h * h + h) + w * h + w;
        self.nlayers * (2 * mlp + w)
    }

    /// A block with weights drawn from `seed`: MLP weights and biases uniform in
    /// `(-1/sqrt(fan_in), 1/sqrt(fan_in))` (PyTorch's default), scales `w_s = 0`, masks as the
    /// spec (layer 0 a random half, odd layers the complement of the previous, even layers anew).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> RealNvp<B> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(self.nlayers);
        let mut mask = vec![0.0f64; self.width];
        for n in 0..self.nlayers {
            if n % 2 == 0 {
                let mut idx: Vec<usize> = (0..self.width).collect();
                idx.shuffle(&mut rng);
                mask = vec![0.0; self.width];
                for &i in &idx[..self.width / 2] {
                    mask[i] = 1.0;
                }
            } else {
                mask = mask.iter().map(|m| 1.0 - m).collect();
            }
            let row =
                |v: &[f64]| Tensor::from_data(TensorData::new(v.to_vec(), [1, self.width]), device);
            let complement: Vec<f64> = mask.iter().map(|m| 1.0 - m).collect();
            layers.push(Coupling {
                s: self.mlp(&mut rng, device),
                t: self.mlp(&mut rng, device),
                scale: Param::from_tensor(Tensor::zeros([1, self.width], device)),
                keep: row(&mask),
                change: row(&complement),
            });
        }
        RealNvp { layers }
    }

    fn mlp<B: Backend>(&self, rng: &mut StdRng, device: &B::Device) -> Mlp<B> {
        let mut dims = vec![self.width];
        dims.extend(std::iter::repeat_n(self.nhidden, self.nmlp));
        dims.push(self.width);
        let layers = dims
            .windows(2)
            .map(|io| linear(io[0], io[1], rng, device))
            .collect();
        Mlp { layers }
    }
}

fn linear<B: Backend>(i: usize, o: usize, rng: &mut StdRng, device: &B::Device) -> Linear<B> {
    let k = 1.0 / (i as f64).sqrt();
    let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-k..k)).collect() };
    let weight = Tensor::from_data(TensorData::new(draw(i * o), [i, o]), device);
    let bias = Tensor::from_data(TensorData::new(draw(o), [o]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// A multilayer perceptron: ELU after every hidden layer, a linear output.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = activation::elu(x, 1.0);
            }
        }
        x
    }
}

/// One affine coupling layer.
#[derive(Module, Debug)]
pub struct Coupling<B: Backend> {
    s: Mlp<B>,
    t: Mlp<B>,
    /// The learnable `w` of the scalable tanh, `[1, width]`, initialized to zero.
    scale: Param<Tensor<B, 2>>,
    /// The mask `b` (1 = kept), `[1, width]` (a constant).
    keep: Tensor<B, 2>,
    /// `1 - b`, `[1, width]` (a constant).
    change: Tensor<B, 2>,
}

impl<B: Backend> Coupling<B> {
    /// `(s, t)` from the kept part of `y`; both vanish on kept entries.
    fn shift_scale(&self, y: &Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let kept = y.clone() * self.keep.clone();
        let s = self.s.forward(kept.clone()).tanh() * self.scale.val() * self.change.clone();
        let t = self.t.forward(kept) * self.change.clone();
        (s, t)
    }
}

/// A RealNVP bijector on blocks of `width` values: rows of a `[blocks, width]` tensor.
#[derive(Module, Debug)]
pub struct RealNvp<B: Backend> {
    layers: Vec<Coupling<B>>,
}

impl<B: Backend> RealNvp<B> {
    /// Generate direction (`z -> x`): returns the outputs and `ln|det|` per row, `[rows]`.
    pub fn generate(&self, mut y: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let mut ld: Option<Tensor<B, 2>> = None;
        for layer in &self.layers {
            let (s, t) = layer.shift_scale(&y);
            y = y * s.clone().exp() + t;
            ld = Some(match ld {
                Some(acc) => acc + s,
                None => s,
            });
        }
        (y, row_sum(ld))
    }

    /// Infer direction (`x -> z`): returns the outputs and `ln|det|` per row, `[rows]`.
    pub fn infer(&self, mut y: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let mut ld: Option<Tensor<B, 2>> = None;
        for layer in self.layers.iter().rev() {
            let (s, t) = layer.shift_scale(&y);
            y = (y - t) * s.clone().neg().exp();
            ld = Some(match ld {
                Some(acc) => acc - s,
                None => s.neg(),
            });
        }
        (y, row_sum(ld))
    }
}

/// Sum over the entries of each row (the per-entry log-scales summed once, after all layers).
fn row_sum<B: Backend>(ld: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    let ld = ld.expect("a RealNVP block has at least one coupling layer");
    ld.sum_dim(1).squeeze_dim(1)
}
