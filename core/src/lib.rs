//! # neuralrg
//!
//! Neural Network Renormalization Group (Shuo-Hui Li and Lei Wang, arXiv:1802.02840,
//! PRL 121, 260601 (2018)) on [Burn](https://burn.dev): a normalizing flow made of RealNVP
//! bijectors arranged as a MERA-like hierarchy of disentanglers and decimators, trained by
//! minimizing the variational free energy against a continuous relaxation of the Ising model.
//!
//! One module per idea of the paper:
//! - [`agreement`]: a backend checked against the CPU (GPU tests);
//! - [`analysis`]: receptive fields and mutual information (what the network learned);
//! - [`lattice`]: the periodic lattice, RG levels;
//! - [`ising`]: the Hubbard-Stratonovich relaxation `log p~(x)`;
//! - [`exact`]: Kaufman's exact solution and the transfer matrix;
//! - [`coupling`]: the RealNVP block bijector;
//! - [`mera`]: the hierarchy of disentangler and decimator layers;
//! - [`flow`]: prior, flow density, Z2 symmetrization;
//! - [`fused`]: one block layer as one backend operation (CPU and GPU kernels, backward pass);
//! - [`train`]: the variational free energy, Adam, the NaN guard;
//! - [`sample`]: direct sampling, importance weights, independent Metropolis-Hastings;
//! - [`hmc`]: Hamiltonian Monte Carlo in latent and physical space;
//! - [`host`]: reading tensors back (async in the browser, blocking natively);
//! - [`observables`]: spins from fields, Rao-Blackwell estimators, energy, magnetization, Binder;
//! - [`plot`]: heat maps and figures on any plotters backend;
//! - [`records`]: a run's per-epoch and measurement rows, and their CSV files;
//! - [`resources`]: the memory a configuration needs, checked before allocating;
//! - [`settings`]: partial settings (a URL query, a settings file's table) over a configuration;
//! - [`stats`]: means, errors, log-sum-exp;
//! - [`folder`]: what a run folder holds (`parameters.json`, checkpoint names) and a model in
//!   one file, read and written natively and in the page;
//! - [`device`]: the devices' names (starting a backend on them is native only).
//!
//! Native only: [`run`] (run folders on disk, checkpoints, records), [`sweep`] (grids of runs),
//! [`parallel`] (data-parallel training on several devices) and, with the `cli` feature (on by
//! default), [`cli`] (argument glue of the binaries).

pub mod agreement;
pub mod analysis;
pub mod coupling;
pub mod device;
pub mod exact;
pub mod flow;
pub mod folder;
pub mod fused;
pub mod hmc;
pub mod host;
pub mod ising;
pub mod lattice;
pub mod mera;
pub mod observables;
pub mod plot;
pub mod records;
pub mod resources;
pub mod sample;
pub mod settings;
pub mod stats;
pub mod train;

pub mod checkpoint;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod parallel;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod sweep;
