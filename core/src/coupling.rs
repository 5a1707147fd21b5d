//! The RealNVP bijector that acts on one block (spec section 2, "The RealNVP block").
//!
//! A stack of affine coupling layers on the `w` values of a block (`w = 4` in 2D, 2 in 1D).
//! Layer `n` keeps the entries where its mask `b` is 1 and transforms the others:
//! generate `y <- y * exp(s) + t`, infer `y <- (y - t) * exp(-s)`, with
//! `s = w_s * tanh(S(b*y)) * (1-b)`, `t = T(b*y) * (1-b)`. The scale `w_s` starts at zero, so a
//! fresh flow is volume preserving.
//!
//! All weights of a block live in one packed vector (see [`RealNvpConfig::layout`]); the masks
//! are data of the block, drawn once and stored with it. [`reference`] applies a block with
//! plain tensor operations: the definition every fused kernel is tested against.

use burn::module::{Module, Param};
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

/// Where one dense layer of an MLP lives in a block's packed parameters: the weight
/// `[inputs, outputs]` (row-major) at `weight`, the bias `[outputs]` right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    pub weight: usize,
    pub bias: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// Where coupling layer `n`'s parameters live in the packed vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouplingLayout {
    /// The dense layers of `S`, input to output (ELU after all but the last).
    pub s: Vec<Dense>,
    /// The dense layers of `T`.
    pub t: Vec<Dense>,
    /// The scale `w_s`, `width` values.
    pub scale: usize,
}

impl RealNvpConfig {
    /// Number of trainable parameters of one block:
    /// `nlayers * (2 * (wH + H + (nmlp-1)(H^2 + H) + wH + w) + w)`.
    pub fn num_params(&self) -> usize {
        let (w, h) = (self.width, self.nhidden);
        let mlp = w * h + h + (self.nmlp - 1) * (h * h + h) + w * h + w;
        self.nlayers * (2 * mlp + w)
    }

    /// The packed layout, coupling layer after coupling layer: `S`'s dense layers, `T`'s,
    /// then the scale; each dense layer its weight, then its bias.
    pub fn layout(&self) -> Vec<CouplingLayout> {
        assert!(
            self.nmlp >= 1 && self.width >= 2,
            "MLPs have a hidden layer, blocks two values"
        );
        let mut at = 0;
        let mlp = |at: &mut usize| -> Vec<Dense> {
            let mut dims = vec![self.width];
            dims.extend(std::iter::repeat_n(self.nhidden, self.nmlp));
            dims.push(self.width);
            dims.windows(2)
                .map(|io| {
                    let d = Dense {
                        weight: *at,
                        bias: *at + io[0] * io[1],
                        inputs: io[0],
                        outputs: io[1],
                    };
                    *at += io[0] * io[1] + io[1];
                    d
                })
                .collect()
        };
        (0..self.nlayers)
            .map(|_| {
                let s = mlp(&mut at);
                let t = mlp(&mut at);
                let scale = at;
                at += self.width;
                CouplingLayout { s, t, scale }
            })
            .collect()
    }

    /// Weights and masks drawn from `seed`: MLP weights and biases uniform in
    /// `[-1/sqrt(fan_in), 1/sqrt(fan_in))` (PyTorch's default), scales `w_s = 0`, masks as the
    /// spec (layer 0 a random half, odd layers the complement of the previous, even layers
    /// anew). Returns the packed parameters and the masks (`nlayers x width`, 1 = kept).
    pub fn draw(&self, seed: u64) -> (Vec<f64>, Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = vec![0.0f64; self.num_params()];
        let mut masks = Vec::with_capacity(self.nlayers * self.width);
        let mut mask = vec![0u8; self.width];
        for (n, layer) in self.layout().iter().enumerate() {
            if n % 2 == 0 {
                let mut idx: Vec<usize> = (0..self.width).collect();
                idx.shuffle(&mut rng);
                mask = vec![0; self.width];
                for &i in &idx[..self.width / 2] {
                    mask[i] = 1;
                }
            } else {
                mask.iter_mut().for_each(|m| *m = 1 - *m);
            }
            masks.extend_from_slice(&mask);
            for dense in layer.s.iter().chain(&layer.t) {
                let k = 1.0 / (dense.inputs as f64).sqrt();
                let len = dense.inputs * dense.outputs + dense.outputs;
                for p in &mut params[dense.weight..dense.weight + len] {
                    *p = rng.random_range(-k..k);
                }
            }
        }
        (params, masks)
    }

    /// A block with weights and masks drawn from `seed` (see [`RealNvpConfig::draw`]).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> (RealNvp<B>, Vec<u8>) {
        let (params, masks) = self.draw(seed);
        let n = params.len();
        (
            RealNvp {
                params: Param::from_tensor(Tensor::from_data(TensorData::new(params, [n]), device)),
            },
            masks,
        )
    }
}

/// The trainable part of a RealNVP block: all its weights in one tensor (the layout of
/// [`RealNvpConfig::layout`]), so the optimizer and the autodiff graph see one tensor per block.
#[derive(Module, Debug)]
pub struct RealNvp<B: Backend> {
    pub params: Param<Tensor<B, 1>>,
}

/// Which way a bijector runs: *generate* is `z -> x`, *infer* is `x -> z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Generate,
    Infer,
}

/// The plain tensor-operation definition of a RealNVP block: the reference for the fused
/// kernels (and the path of any backend without one).
pub mod reference {
    use super::*;

    fn mlp<B: Backend>(
        params: &Tensor<B, 1>,
        layers: &[Dense],
        mut x: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let last = layers.len() - 1;
        for (i, d) in layers.iter().enumerate() {
            let w = params
                .clone()
                .slice(d.weight..d.weight + d.inputs * d.outputs)
                .reshape([d.inputs, d.outputs]);
            let b = params
                .clone()
                .slice(d.bias..d.bias + d.outputs)
                .reshape([1, d.outputs]);
            x = x.matmul(w) + b;
            if i < last {
                x = activation::elu(x, 1.0);
            }
        }
        x
    }

    /// Applies the block with packed `params` and `masks` (`nlayers x width`) to the rows of
    /// `y` (`[rows, width]`) in `direction`; returns the outputs and `ln|det|` per row.
    pub fn apply<B: Backend>(
        config: &RealNvpConfig,
        params: &Tensor<B, 1>,
        masks: &[u8],
        mut y: Tensor<B, 2>,
        direction: Direction,
    ) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let device = y.device();
        let w = config.width;
        let layout = config.layout();
        let order: Vec<usize> = match direction {
            Direction::Generate => (0..config.nlayers).collect(),
            Direction::Infer => (0..config.nlayers).rev().collect(),
        };
        let mut ld: Option<Tensor<B, 2>> = None;
        for n in order {
            let row = |v: Vec<f64>| Tensor::<B, 2>::from_data(TensorData::new(v, [1, w]), &device);
            let m = &masks[n * w..(n + 1) * w];
            let keep = row(m.iter().map(|&b| b as f64).collect());
            let change = row(m.iter().map(|&b| 1.0 - b as f64).collect());
            let l = &layout[n];
            let kept = y.clone() * keep;
            let scale = params.clone().slice(l.scale..l.scale + w).reshape([1, w]);
            let s = mlp(params, &l.s, kept.clone()).tanh() * scale * change.clone();
            let t = mlp(params, &l.t, kept) * change;
            let (next, step) = match direction {
                Direction::Generate => (y * s.clone().exp() + t, s),
                Direction::Infer => ((y - t) * s.clone().neg().exp(), s.neg()),
            };
            y = next;
            ld = Some(match ld {
                Some(acc) => acc + step,
                None => step,
            });
        }
        let ld = ld.expect("a RealNVP block has at least one coupling layer");
        (y, ld.sum_dim(1).squeeze_dim(1))
    }
}
