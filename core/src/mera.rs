//! The MERA-like hierarchy of block bijectors (spec section 2, "Hierarchy").
//!
//! Level `k` (`h = 2^k`) works on the sites whose coordinates are multiples of `h`. Each level
//! applies, in the infer direction (`x -> z`), `nrepeat` pairs of block layers:
//! layer A on the aligned blocks (corners at multiples of `2h`), the *disentangler*, and
//! layer B on the blocks shifted diagonally by `h`, the *decimator*: of each B block only the
//! site `(r0+h, c0+h)` continues to the next level; the other three are the latent variables
//! decimated at scale `k`. (The original's README names the colours the other way round; the
//! names here follow the data flow.) Generation (`z -> x`) runs the layers in reverse with the
//! inverse bijectors. One bijector serves every block of a layer: each layer is one fused
//! operation on the whole batch ([`crate::fused`]).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::coupling::{Direction, RealNvp, RealNvpConfig};
use crate::fused::{self, FlowBackend, Kernel, LayerPlan};
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

/// Architecture of the whole network: the architecture settings of a
/// [`crate::train::TrainConfig`], declared here (names, documentation, defaults) once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct MeraConfig {
    /// Lattice side `L` and dimension `d`.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub lattice: Lattice,
    /// MERA levels to build (`depthMERA`), 1..=log2 L [default: all]; sites above stay identity.
    #[serde(rename = "depthMERA")]
    #[cfg_attr(
        feature = "cli",
        arg(long = "depth-mera", id = "depthMERA", alias = "depthMERA")
    )]
    pub depth: Option<usize>,
    /// Copies of the [disentangler, decimator] pair per MERA level.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = MeraConfig::default().nrepeat))]
    pub nrepeat: usize,
    /// Affine coupling layers per RealNVP block.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = MeraConfig::default().nlayers))]
    pub nlayers: usize,
    /// Hidden layers of each MLP in a coupling layer.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = MeraConfig::default().nmlp))]
    pub nmlp: usize,
    /// Width of the MLPs' hidden layers.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = MeraConfig::default().nhidden))]
    pub nhidden: usize,
}

impl Default for MeraConfig {
    /// The paper's network (`nlayers 10, nmlp 3, nhidden 10, nrepeat 1`, every level) on the
    /// default lattice (8x8).
    fn default() -> Self {
        Self {
            lattice: Lattice::default(),
            depth: None,
            nrepeat: 1,
            nlayers: 10,
            nmlp: 3,
            nhidden: 10,
        }
    }
}

impl MeraConfig {
    /// The paper's network on `lattice`, every level.
    pub fn paper(lattice: Lattice) -> Self {
        Self {
            lattice,
            ..Self::default()
        }
    }

    /// Levels built: `depthMERA`, or all `log2 L` levels.
    pub fn depth(&self) -> usize {
        self.depth.unwrap_or(self.lattice.depth())
    }

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
        2 * self.nrepeat * self.depth()
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.num_modules() * self.block().num_params()
    }

    /// The network with weights and masks drawn from `seed` (module `m` uses a seed derived
    /// from both).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Mera<B> {
        let (blocks, masks): (Vec<_>, Vec<_>) = (0..self.num_modules())
            .map(|m| {
                self.block()
                    .init(splitmix64(seed ^ splitmix64(m as u64 + 1)), device)
            })
            .unzip();
        Mera {
            blocks,
            plans: self
                .plans(masks)
                .expect("masks drawn for this architecture"),
            kernel: Kernel::default(),
        }
    }

    /// The block layers' plans with these masks (one `nlayers x width` vector per module);
    /// refuses masks that do not fit the architecture.
    pub fn plans(&self, masks: Vec<Vec<u8>>) -> Result<Vec<Arc<LayerPlan>>, String> {
        let layers = block_layers(self.lattice, self.depth(), self.nrepeat);
        let block = self.block();
        if masks.len() != layers.len() {
            return Err(format!(
                "{} masks for {} block layers",
                masks.len(),
                layers.len()
            ));
        }
        let mut plans = Vec::with_capacity(layers.len());
        for (layer, m) in layers.into_iter().zip(masks) {
            let fits = m.len() == block.nlayers * block.width
                && m.chunks(block.width).all(|c| {
                    c.iter().all(|&b| b <= 1)
                        && c.iter().filter(|&&b| b == 1).count() == block.width / 2
                });
            if !fits {
                return Err(format!(
                    "a mask of block layer {} does not fit {} coupling layers of width {}",
                    plans.len(),
                    block.nlayers,
                    block.width
                ));
            }
            plans.push(Arc::new(LayerPlan::new(
                block,
                m,
                layer.sites,
                self.lattice.sites(),
            )));
        }
        Ok(plans)
    }
}

/// The MERA network: one RealNVP bijector per block layer.
#[derive(Module, Debug)]
pub struct Mera<B: Backend> {
    /// One bijector's parameters per block layer, in infer order.
    pub blocks: Vec<RealNvp<B>>,
    /// Each block layer's masks and sites (constants, stored with the parameters).
    plans: Vec<Arc<LayerPlan>>,
    /// Fused kernel or reference tensor code.
    kernel: Kernel,
}

impl<B: Backend> Mera<B> {
    /// Number of sites `N`.
    pub fn sites(&self) -> usize {
        self.plans[0].n
    }

    /// The device the network lives on.
    pub fn device(&self) -> B::Device {
        self.blocks[0].params.val().device()
    }

    /// Number of block layers.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The masks of every block (`nlayers x width` each, 1 = kept), in infer order.
    pub fn masks(&self) -> Vec<Vec<u8>> {
        self.plans.iter().map(|p| p.masks.clone()).collect()
    }

    /// The block layers' plans (masks and sites), in infer order.
    pub fn plans(&self) -> &[Arc<LayerPlan>] {
        &self.plans
    }

    /// The same network with other masks (from a checkpoint); `config` must be its architecture.
    pub fn with_masks(mut self, config: &MeraConfig, masks: Vec<Vec<u8>>) -> Result<Self, String> {
        self.plans = config.plans(masks)?;
        Ok(self)
    }

    /// The same network running its block layers with `kernel`.
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Which implementation runs the block layers.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

impl<B: FlowBackend> Mera<B> {
    /// Applies block layers `layers` (in that order) to `v` (`[batch, N]`, site order) in
    /// `direction`; returns the result and the summed log-determinant.
    fn run(
        &self,
        v: Tensor<B, 2>,
        layers: impl Iterator<Item = usize>,
        direction: Direction,
    ) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let [batch, n] = v.dims();
        let device = v.device();
        let mut state = Tensor::cat(vec![v, Tensor::zeros([batch, 1], &device)], 1);
        for i in layers {
            state = fused::block_layer(
                self.kernel,
                state,
                self.blocks[i].params.val(),
                &self.plans[i],
                direction,
            );
        }
        let field = state.clone().slice([0..batch, 0..n]);
        let logdet = state.slice([0..batch, n..n + 1]).squeeze_dim(1);
        (field, logdet)
    }

    /// Infer direction `x -> z` (`[batch, N]`, site order); returns `z` and `ln|det dz/dx|`.
    pub fn infer(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        self.run(x, 0..self.blocks.len(), Direction::Infer)
    }

    /// The outputs of the first `layers` block layers in the infer direction, in site order:
    /// `layers = 0` gives `x`, `layers = len` gives `z`.
    pub fn infer_partial(&self, x: Tensor<B, 2>, layers: usize) -> Tensor<B, 2> {
        let layers = layers.min(self.blocks.len());
        self.run(x, 0..layers, Direction::Infer).0
    }

    /// Generate direction `z -> x` (`[batch, N]`, site order); returns `x` and `ln|det dx/dz|`.
    pub fn generate(&self, z: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        self.run(z, (0..self.blocks.len()).rev(), Direction::Generate)
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
