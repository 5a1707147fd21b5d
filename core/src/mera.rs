//! The MERA-like hierarchy of block bijectors (spec section 2, "Hierarchy").
//!
//! Level `k` (`h = 2^k`) works on the sites whose coordinates are multiples of `h`. Each level
//! applies, in the infer direction (`x -> z`), `nrepeat` pairs of block layers:
//! layer A on the aligned blocks (corners at multiples of `2h`), the *disentangler*, and
//! layer B on the blocks shifted diagonally by `h`, the *decimator*: of each B block only the
//! site `(r0+h, c0+h)` continues to the next level; the other three are the latent variables
//! decimated at scale `k`. (The original's README names the colours the other way round; the
//! names here follow the data flow.) Generation (`z -> x`) runs the layers in reverse with the
//! inverse bijectors. One bijector serves every block of a layer: the blocks are folded into
//! the batch with one gather per layer.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::coupling::{RealNvp, RealNvpConfig};
use crate::lattice::Lattice;

/// Which of the two block layers of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// Aligned blocks: the disentangler.
    Disentangler,
    /// Blocks shifted by `h`: the decimator.
    Decimator,
}

/// One block layer of the hierarchy: its level and kind, and its blocks' sites in block order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayer {
    /// RG level `k` (the blocks have spacing `h = 2^k`).
    pub level: usize,
    /// Which copy of the level's [A, B] pair (`0..nrepeat`).
    pub repeat: usize,
    pub kind: LayerKind,
    /// Sites of all blocks, block after block, each in the spec's order
    /// `(r0,c0), (r0,c0+h), (r0+h,c0), (r0+h,c0+h)` (1D: `r0, r0+h`).
    pub sites: Vec<usize>,
}

impl BlockLayer {
    /// Values per block: 4 in 2D, 2 in 1D.
    pub fn width(&self, lattice: Lattice) -> usize {
        if lattice.dim() == 2 { 4 } else { 2 }
    }
}

/// The block layers of the hierarchy in infer order (`x -> z`).
pub fn block_layers(lattice: Lattice, depth: usize, nrepeat: usize) -> Vec<BlockLayer> {
    let l = lattice.side();
    let mut layers = Vec::new();
    for level in 0..depth {
        let h = 1usize << level;
        for repeat in 0..nrepeat {
            for kind in [LayerKind::Disentangler, LayerKind::Decimator] {
                let offset = if kind == LayerKind::Disentangler {
                    0
                } else {
                    h
                };
                let corners: Vec<usize> = (0..l / (2 * h)).map(|i| offset + 2 * h * i).collect();
                let mut sites = Vec::new();
                if lattice.dim() == 1 {
                    for &c0 in &corners {
                        sites.extend([lattice.index(0, c0), lattice.index(0, c0 + h)]);
                    }
                } else {
                    for &r0 in &corners {
                        for &c0 in &corners {
                            sites.extend([
                                lattice.index(r0, c0),
                                lattice.index(r0, c0 + h),
                                lattice.index(r0 + h, c0),
                                lattice.index(r0 + h, c0 + h),
                            ]);
                        }
                    }
                }
                layers.push(BlockLayer {
                    level,
                    repeat,
                    kind,
                    sites,
                });
            }
        }
    }
    layers
}

/// Architecture of the whole network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeraConfig {
    pub lattice: Lattice,
    /// Levels built (`depthMERA`), `1..=log2 L`; sites above stay identity.
    pub depth: usize,
    /// Copies of the [disentangler, decimator] pair per level (`nrepeat`).
    pub nrepeat: usize,
    /// Coupling layers per block bijector (`nlayers`).
    pub nlayers: usize,
    /// Hidden layers per MLP (`nmlp`).
    pub nmlp: usize,
    /// Hidden width (`nhidden`).
    pub nhidden: usize,
}

impl MeraConfig {
    /// The configuration of each block bijector.
    pub fn block(&self) -> RealNvpConfig {
        RealNvpConfig {
            width: if self.lattice.dim() == 2 { 4 } else { 2 },
            nlayers: self.nlayers,
            nmlp: self.nmlp,
            nhidden: self.nhidden,
        }
    }

    /// Number of block bijectors, `2 * nrepeat * depth`.
    pub fn num_modules(&self) -> usize {
        2 * self.nrepeat * self.depth
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.num_modules() * self.block().num_params()
    }

    /// The network with weights drawn from `seed` (module `m` uses a seed derived from both).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Mera<B> {
        let layers = block_layers(self.lattice, self.depth, self.nrepeat);
        let n = self.lattice.sites();
        // The order of the working vector while layer `i` acts: its blocks' sites first.
        let orders: Vec<Vec<usize>> = layers
            .iter()
            .map(|layer| {
                let mut in_block = vec![false; n];
                layer.sites.iter().for_each(|&s| in_block[s] = true);
                let mut order = layer.sites.clone();
                order.extend((0..n).filter(|&s| !in_block[s]));
                order
            })
            .collect();
        let identity: Vec<usize> = (0..n).collect();
        let mut chain = vec![identity.clone()];
        chain.extend(orders.iter().cloned());
        chain.push(identity);
        let gather = |from: &[usize], to: &[usize]| -> Tensor<B, 1, Int> {
            let mut pos = vec![0i64; n];
            from.iter()
                .enumerate()
                .for_each(|(p, &s)| pos[s] = p as i64);
            let idx: Vec<i64> = to.iter().map(|&s| pos[s]).collect();
            Tensor::from_data(TensorData::new(idx, [n]), device)
        };
        let forward: Vec<_> = chain.windows(2).map(|w| gather(&w[0], &w[1])).collect();
        let backward: Vec<_> = chain.windows(2).map(|w| gather(&w[1], &w[0])).collect();
        let blocks = (0..layers.len())
            .map(|m| {
                self.block()
                    .init(splitmix64(seed ^ splitmix64(m as u64 + 1)), device)
            })
            .collect();
        Mera {
            blocks,
            orders,
            to_next: forward,
            to_prev: backward,
            block_sizes: layers.iter().map(|l| l.sites.len()).collect(),
            width: self.block().width,
        }
    }
}

/// The MERA network: one RealNVP bijector per block layer.
#[derive(Module, Debug)]
pub struct Mera<B: Backend> {
    /// One bijector per block layer, in infer order.
    pub blocks: Vec<RealNvp<B>>,
    /// The site order of the working vector while layer `i` acts (its blocks' sites first).
    orders: Vec<Vec<usize>>,
    /// `to_next[i]` gathers the working vector from the order of layer `i-1` into that of layer
    /// `i` (orders `-1` and `len` are the site order); constants.
    to_next: Vec<Tensor<B, 1, Int>>,
    /// The inverse gathers; constants.
    to_prev: Vec<Tensor<B, 1, Int>>,
    block_sizes: Vec<usize>,
    width: usize,
}

impl<B: Backend> Mera<B> {
    /// Number of sites `N`.
    pub fn sites(&self) -> usize {
        self.to_next[0].dims()[0]
    }

    /// The device the network lives on.
    pub fn device(&self) -> B::Device {
        self.to_next[0].device()
    }

    /// Applies block layer `i` to the leading `block_sizes[i]` entries of `v` (`[batch, N]`).
    fn apply(&self, i: usize, v: Tensor<B, 2>, generate: bool) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let [batch, n] = v.dims();
        let m = self.block_sizes[i];
        let blocks = v
            .clone()
            .slice([0..batch, 0..m])
            .reshape([batch * m / self.width, self.width]);
        let (out, ld) = if generate {
            self.blocks[i].generate(blocks)
        } else {
            self.blocks[i].infer(blocks)
        };
        let out = out.reshape([batch, m]);
        let v = if m == n {
            out
        } else {
            Tensor::cat(vec![out, v.slice([0..batch, m..n])], 1)
        };
        let ld = ld
            .reshape([batch, m / self.width])
            .sum_dim(1)
            .squeeze_dim(1);
        (v, ld)
    }

    /// Infer direction `x -> z` (`[batch, N]`, site order); returns `z` and `ln|det dz/dx|`.
    pub fn infer(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let batch = x.dims()[0];
        let mut v = x;
        let mut logdet = Tensor::zeros([batch], &v.device());
        for i in 0..self.blocks.len() {
            v = v.select(1, self.to_next[i].clone());
            let (nv, ld) = self.apply(i, v, false);
            v = nv;
            logdet = logdet + ld;
        }
        (v.select(1, self.to_next[self.blocks.len()].clone()), logdet)
    }

    /// The outputs of the first `layers` block layers in the infer direction, in site order:
    /// `layers = 0` gives `x`, `layers = len` gives `z`.
    pub fn infer_partial(&self, x: Tensor<B, 2>, layers: usize) -> Tensor<B, 2> {
        let layers = layers.min(self.blocks.len());
        if layers == self.blocks.len() {
            return self.infer(x).0;
        }
        let mut v = x;
        for i in 0..layers {
            v = v.select(1, self.to_next[i].clone());
            v = self.apply(i, v, false).0;
        }
        if layers == 0 {
            return v;
        }
        let order = &self.orders[layers - 1];
        let mut pos = vec![0i64; order.len()];
        order
            .iter()
            .enumerate()
            .for_each(|(p, &s)| pos[s] = p as i64);
        let idx = Tensor::from_data(TensorData::new(pos, [order.len()]), &v.device());
        v.select(1, idx)
    }

    /// Number of block layers.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Generate direction `z -> x` (`[batch, N]`, site order); returns `x` and `ln|det dx/dz|`.
    pub fn generate(&self, z: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let batch = z.dims()[0];
        let mut v = z;
        let mut logdet = Tensor::zeros([batch], &v.device());
        for i in (0..self.blocks.len()).rev() {
            v = v.select(1, self.to_prev[i + 1].clone());
            let (nv, ld) = self.apply(i, v, true);
            v = nv;
            logdet = logdet + ld;
        }
        (v.select(1, self.to_prev[0].clone()), logdet)
    }
}

/// SplitMix64: derives independent seeds from one.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_covers_its_sublattice_once() {
        for (l, d) in [(8, 2), (16, 1)] {
            let lat = Lattice::new(l, d).unwrap();
            for layer in block_layers(lat, lat.depth(), 1) {
                let h = 1 << layer.level;
                let mut sites = layer.sites.clone();
                sites.sort();
                sites.dedup();
                assert_eq!(sites.len(), layer.sites.len(), "a site twice in one layer");
                assert_eq!(sites.len(), (l / h).pow(d as u32));
                assert!(sites.iter().all(|&s| {
                    let (r, c) = lat.coords(s);
                    r % h == 0 && c % h == 0
                }));
            }
        }
    }

    #[test]
    fn decimator_keeps_the_next_sublattice() {
        let lat = Lattice::new(8, 2).unwrap();
        let layers = block_layers(lat, 3, 1);
        let b = &layers[1];
        assert_eq!(b.kind, LayerKind::Decimator);
        // The fourth site of each B block lies on the next level's sublattice.
        for block in b.sites.chunks(4) {
            let (r, c) = lat.coords(block[3]);
            assert!(r % 2 == 0 && c % 2 == 0);
            for &s in &block[..3] {
                assert_eq!(lat.rg_level(s), 0);
            }
        }
    }
}
