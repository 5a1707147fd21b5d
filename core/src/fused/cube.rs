//! The block layer on the GPU: CubeCL kernels, compiled by Burn's CubeCL backends for wgpu
//! (SPIR-V on Vulkan natively, WGSL on WebGPU in the browser) and CUDA.
//!
//! Forward: one unit per row (one block of one sample) runs the block's coupling layers with its
//! `width` values and the MLPs' hidden activations in local arrays, writes its block's sites and
//! its log-determinant; a second kernel copies the sites outside the layer and adds the
//! log-determinants of each sample's blocks to the state's last column (in block order).
//!
//! For training the forward pass also keeps each coupling layer's input of every row. Backward:
//! a fixed number of units each take every `units`-th row: walk the coupling layers back from
//! their saved inputs, recomputing each MLP's activations, write the row's input gradient and
//! add its parameter gradients to the unit's own column of a `[P, units]` buffer, which Burn's
//! `sum_dim` then reduces. No atomics (WebGPU has no float atomics) and a result that does not
//! depend on scheduling.
//!
//! `exp` is the device's; `tanh` is computed from `exp(-2|x|)` (never overflows), and from its
//! series `x - x^3/3` below |x| = 0.01.

use std::sync::Arc;

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{Bytes, DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::{FlowBackend, LayerPlan};
use crate::coupling::Direction;

/// The ELU; a NaN stays a NaN (the unused branch's overflow is discarded by `select`).
#[cube]
fn elu<F: Float>(x: F) -> F {
    select(x > F::new(0.0), x, F::exp(x) - F::new(1.0))
}

/// The ELU's derivative from its output.
#[cube]
fn elu_grad<F: Float>(y: F) -> F {
    select(y > F::new(0.0), F::new(1.0), y + F::new(1.0))
}

/// `tanh x` from `exp(-2|x|)` (never overflows), and `x - x^3/3` near 0, where the other form
/// loses relative precision.
#[cube]
fn tanh_stable<F: Float>(x: F) -> F {
    let e = F::exp(F::new(-2.0) * F::abs(x));
    let t = (F::new(1.0) - e) / (F::new(1.0) + e);
    let t = select(x < F::new(0.0), F::new(0.0) - t, t);
    select(F::abs(x) < F::new(0.01), x - x * x * x / F::new(3.0), t)
}

/// One MLP whose parameters start at `off`, on the input `y * keep`: hidden activations into
/// `acts` (`nmlp x h`), outputs into `out` (`w`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mlp_forward<F: Float>(
    p: &Tensor<F>,
    off: usize,
    y: &Array<F>,
    keep: &Array<F>,
    acts: &mut Array<F>,
    out: &mut Array<F>,
    #[comptime] w: usize,
    #[comptime] h: usize,
    #[comptime] nmlp: usize,
) {
    for j in 0..h {
        let mut acc = p[off + w * h + j];
        for i in 0..w {
            acc += p[off + i * h + j] * y[i] * keep[i];
        }
        acts[j] = elu::<F>(acc);
    }
    let mut o = off + w * h + h;
    for l in 1..nmlp {
        for j in 0..h {
            let mut acc = p[o + h * h + j];
            for i in 0..h {
                acc += p[o + i * h + j] * acts[(l - 1) * h + i];
            }
            acts[l * h + j] = elu::<F>(acc);
        }
        o += h * h + h;
    }
    for c in 0..w {
        let mut acc = p[o + h * w + c];
        for i in 0..h {
            acc += p[o + i * w + c] * acts[(nmlp - 1) * h + i];
        }
        out[c] = acc;
    }
}

/// Backpropagates `delta` (the gradient of the MLP's outputs) through the MLP at `off` whose
/// input was `y * keep` and activations `acts`: adds the parameter gradients to column `u` of
/// `partial` (`[P, units]`) and the input gradient to `gy` (kept entries).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mlp_backward<F: Float>(
    p: &Tensor<F>,
    partial: &mut Tensor<F>,
    off: usize,
    units: usize,
    u: usize,
    y: &Array<F>,
    keep: &Array<F>,
    acts: &Array<F>,
    delta: &Array<F>,
    gy: &mut Array<F>,
    g: &mut Array<F>,
    g2: &mut Array<F>,
    #[comptime] w: usize,
    #[comptime] h: usize,
    #[comptime] nmlp: usize,
) {
    let last = off + w * h + h + (nmlp - 1) * (h * h + h);
    for c in 0..w {
        partial[(last + h * w + c) * units + u] += delta[c];
    }
    for i in 0..h {
        let mut acc = F::new(0.0);
        let a = acts[(nmlp - 1) * h + i];
        for c in 0..w {
            acc += p[last + i * w + c] * delta[c];
            partial[(last + i * w + c) * units + u] += a * delta[c];
        }
        g[i] = acc;
    }
    // Hidden layers nmlp-1 .. 1 (h -> h), then the first (w -> h).
    for rl in 0..nmlp - 1 {
        let l = nmlp - 1 - rl;
        let lo = off + w * h + h + (l - 1) * (h * h + h);
        for j in 0..h {
            g[j] *= elu_grad::<F>(acts[l * h + j]);
            partial[(lo + h * h + j) * units + u] += g[j];
        }
        for i in 0..h {
            let mut acc = F::new(0.0);
            let a = acts[(l - 1) * h + i];
            for j in 0..h {
                acc += p[lo + i * h + j] * g[j];
                partial[(lo + i * h + j) * units + u] += a * g[j];
            }
            g2[i] = acc;
        }
        for i in 0..h {
            g[i] = g2[i];
        }
    }
    for j in 0..h {
        g[j] *= elu_grad::<F>(acts[j]);
        partial[(off + w * h + j) * units + u] += g[j];
    }
    for i in 0..w {
        let mut acc = F::new(0.0);
        let x = y[i] * keep[i];
        for j in 0..h {
            acc += p[off + i * h + j] * g[j];
            partial[(off + i * h + j) * units + u] += x * g[j];
        }
        gy[i] += acc * keep[i];
    }
}

/// The coupling layers forward on one row's values `y` (in place); returns the
/// log-determinant. Keeps each coupling layer's input in `inputs` (`nlayers x w`) when `keep_inputs`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn couplings_forward<F: Float>(
    p: &Tensor<F>,
    table: &Tensor<u32>,
    mask_off: usize,
    y: &mut Array<F>,
    inputs: &mut Array<F>,
    keep: &mut Array<F>,
    acts: &mut Array<F>,
    a: &mut Array<F>,
    t: &mut Array<F>,
    #[comptime] w: usize,
    #[comptime] h: usize,
    #[comptime] nmlp: usize,
    #[comptime] nlayers: usize,
    #[comptime] generate: bool,
    #[comptime] keep_inputs: bool,
) -> F {
    let mlp = w * h + h + (nmlp - 1) * (h * h + h) + h * w + w;
    let mut ld = F::new(0.0);
    for step in 0..nlayers {
        let mut n = step;
        if !generate {
            n = nlayers - 1 - step;
        }
        for e in 0..w {
            keep[e] = F::cast_from(table[mask_off + n * w + e]);
            if keep_inputs {
                inputs[step * w + e] = y[e];
            }
        }
        let off = n * (2 * mlp + w);
        mlp_forward::<F>(p, off, y, keep, acts, a, w, h, nmlp);
        mlp_forward::<F>(p, off + mlp, y, keep, acts, t, w, h, nmlp);
        for e in 0..w {
            let change = F::new(1.0) - keep[e];
            let s = p[off + 2 * mlp + e] * tanh_stable::<F>(a[e]) * change;
            let shift = t[e] * change;
            if generate {
                y[e] = y[e] * F::exp(s) + shift;
                ld += s;
            } else {
                y[e] = (y[e] - shift) * F::exp(F::new(0.0) - s);
                ld -= s;
            }
        }
    }
    ld
}

/// Forward: one unit per row; writes the row's block sites of `out` and its log-determinant,
/// and with `save` each coupling layer's input into row `r` of `saved` (`[rows, nlayers * w]`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn block_layer_forward<F: Float>(
    state: &Tensor<F>,
    params: &Tensor<F>,
    table: &Tensor<u32>,
    out: &mut Tensor<F>,
    ld_rows: &mut Tensor<F>,
    saved: &mut Tensor<F>,
    rows: usize,
    blocks: usize,
    cols: usize,
    #[comptime] w: usize,
    #[comptime] h: usize,
    #[comptime] nmlp: usize,
    #[comptime] nlayers: usize,
    #[comptime] generate: bool,
    #[comptime] save: bool,
    #[define(F)] _dtype: StorageType,
) {
    let r = ABSOLUTE_POS;
    if r >= rows {
        terminate!();
    }
    let base = (r / blocks) * cols;
    let k = r % blocks;
    let mut y = Array::<F>::new(w);
    for e in 0..w {
        y[e] = state[base + table[k * w + e] as usize];
    }
    let mut inputs = Array::<F>::new(nlayers * w);
    let mut keep = Array::<F>::new(w);
    let mut acts = Array::<F>::new(nmlp * h);
    let mut a = Array::<F>::new(w);
    let mut t = Array::<F>::new(w);
    let ld = couplings_forward::<F>(
        params,
        table,
        blocks * w,
        &mut y,
        &mut inputs,
        &mut keep,
        &mut acts,
        &mut a,
        &mut t,
        w,
        h,
        nmlp,
        nlayers,
        generate,
        save,
    );
    for e in 0..w {
        let site = base + table[k * w + e] as usize;
        out[site] = y[e];
    }
    ld_rows[r] = ld;
    if save {
        for q in 0..nlayers * w {
            saved[r * nlayers * w + q] = inputs[q];
        }
    }
}

/// Finishes a layer's output state (or its input gradient): the columns outside the layer are
/// copied from `source`; the last column is `source`'s plus, when `add_logdets`, the sum of each
/// sample's block log-determinants (in block order).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn block_layer_finish<F: Float>(
    source: &Tensor<F>,
    table: &Tensor<u32>,
    ld_rows: &Tensor<F>,
    out: &mut Tensor<F>,
    total: usize,
    blocks: usize,
    cols: usize,
    flags_off: usize,
    #[comptime] add_logdets: bool,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= total {
        terminate!();
    }
    let b = i / cols;
    let c = i % cols;
    if c == cols - 1 {
        let mut acc = source[i];
        if add_logdets {
            for k in 0..blocks {
                acc += ld_rows[b * blocks + k];
            }
        }
        out[i] = acc;
    } else {
        if table[flags_off + c] == 0u32 {
            out[i] = source[i];
        }
    }
}

/// Backward, from the coupling layers' inputs the forward pass saved: `units` units, unit `u`
/// takes rows `u, u + units, ...`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn block_layer_backward<F: Float>(
    saved: &Tensor<F>,
    params: &Tensor<F>,
    table: &Tensor<u32>,
    grad: &Tensor<F>,
    grad_state: &mut Tensor<F>,
    partial: &mut Tensor<F>,
    rows: usize,
    blocks: usize,
    cols: usize,
    units: usize,
    #[comptime] w: usize,
    #[comptime] h: usize,
    #[comptime] nmlp: usize,
    #[comptime] nlayers: usize,
    #[comptime] generate: bool,
    #[define(F)] _dtype: StorageType,
) {
    let u = ABSOLUTE_POS;
    if u >= units {
        terminate!();
    }
    let mlp = w * h + h + (nmlp - 1) * (h * h + h) + h * w + w;
    let np = nlayers * (2 * mlp + w);
    for q in 0..np {
        partial[q * units + u] = F::new(0.0);
    }
    let mask_off = blocks * w;
    let mut y = Array::<F>::new(w);
    let mut inputs = Array::<F>::new(nlayers * w);
    let mut keep = Array::<F>::new(w);
    let mut acts_s = Array::<F>::new(nmlp * h);
    let mut acts_t = Array::<F>::new(nmlp * h);
    let mut a = Array::<F>::new(w);
    let mut t = Array::<F>::new(w);
    let mut gy = Array::<F>::new(w);
    let mut ga = Array::<F>::new(w);
    let mut gt = Array::<F>::new(w);
    let mut g = Array::<F>::new(h);
    let mut g2 = Array::<F>::new(h);
    let mut r = u;
    while r < rows {
        let base = (r / blocks) * cols;
        let k = r % blocks;
        for e in 0..w {
            let site = base + table[k * w + e] as usize;
            gy[e] = grad[site];
        }
        for q in 0..nlayers * w {
            inputs[q] = saved[r * nlayers * w + q];
        }
        let gld = grad[base + cols - 1];
        for rstep in 0..nlayers {
            let step = nlayers - 1 - rstep;
            let mut n = step;
            if !generate {
                n = nlayers - 1 - step;
            }
            for e in 0..w {
                keep[e] = F::cast_from(table[mask_off + n * w + e]);
                y[e] = inputs[step * w + e];
            }
            let off = n * (2 * mlp + w);
            mlp_forward::<F>(params, off, &y, &keep, &mut acts_s, &mut a, w, h, nmlp);
            mlp_forward::<F>(
                params,
                off + mlp,
                &y,
                &keep,
                &mut acts_t,
                &mut t,
                w,
                h,
                nmlp,
            );
            for e in 0..w {
                let change = F::new(1.0) - keep[e];
                let sc = params[off + 2 * mlp + e];
                let th = tanh_stable::<F>(a[e]);
                let s = sc * th * change;
                let mut gs = gld;
                if generate {
                    let es = F::exp(s);
                    gs += gy[e] * y[e] * es;
                    gt[e] = gy[e] * change;
                    gy[e] *= es;
                } else {
                    let es = F::exp(F::new(0.0) - s);
                    let moved = (y[e] - t[e] * change) * es;
                    gs = F::new(0.0) - gy[e] * moved - gld;
                    gt[e] = (F::new(0.0) - gy[e] * es) * change;
                    gy[e] *= es;
                }
                gs *= change;
                partial[(off + 2 * mlp + e) * units + u] += gs * th;
                ga[e] = gs * sc * (F::new(1.0) - th * th);
            }
            mlp_backward::<F>(
                params, partial, off, units, u, &y, &keep, &acts_s, &ga, &mut gy, &mut g, &mut g2,
                w, h, nmlp,
            );
            mlp_backward::<F>(
                params,
                partial,
                off + mlp,
                units,
                u,
                &y,
                &keep,
                &acts_t,
                &gt,
                &mut gy,
                &mut g,
                &mut g2,
                w,
                h,
                nmlp,
            );
        }
        for e in 0..w {
            let site = base + table[k * w + e] as usize;
            grad_state[site] = gy[e];
        }
        r += units;
    }
}

/// The plan's tables for the kernels, one `u32` tensor: the sites (block after block), the
/// masks (coupling layer after coupling layer) and, per column of the state, whether it is in
/// the layer.
fn upload_table<R: CubeRuntime>(like: &CubeTensor<R>, plan: &LayerPlan) -> CubeTensor<R> {
    let mut v: Vec<u32> = plan.sites.iter().map(|&s| s as u32).collect();
    v.extend(plan.masks.iter().map(|&m| m as u32));
    let mut flags = vec![0u32; plan.n + 1];
    plan.sites.iter().for_each(|&s| flags[s] = 1);
    v.extend(flags);
    let n = v.len();
    let handle = like.client.create(Bytes::from_elems(v));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::new([n]),
        handle,
        DType::U32,
    )
}

/// Units of the backward pass: one per 16 rows, at least 64, at most `most`, and few enough
/// that the `[P, units]` buffer of partial parameter gradients stays below 64 MB (WebGPU's
/// storage buffers may be 128 MB).
fn backward_units(rows: usize, params: usize, bytes: usize, most: usize) -> usize {
    let cap = (64 << 20) / (bytes * params.max(1));
    (rows / 16)
        .max(64)
        .min(most.max(1))
        .min(rows)
        .min(cap)
        .max(1)
}

/// The forward pass: the new state and, with `save`, each coupling layer's input of every row
/// (`[rows, nlayers * width]`; otherwise an empty stand-in).
fn forward<R: CubeRuntime>(
    state: CubeTensor<R>,
    params: CubeTensor<R>,
    plan: &LayerPlan,
    direction: Direction,
    save: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (state, params) = (into_contiguous(state), into_contiguous(params));
    let [batch, cols] = state.shape().dims::<2>();
    let (w, blocks) = (plan.block.width, plan.blocks());
    let rows = batch * blocks;
    let (client, device, dtype) = (state.client.clone(), state.device.clone(), state.dtype);
    let table = upload_table(&state, plan);
    let empty = |shape: Shape| {
        empty_device_contiguous_dtype::<R>(client.clone(), device.clone(), shape, dtype)
    };
    let out = empty(Shape::new([batch, cols]));
    let ld_rows = empty(Shape::new([rows.max(1)]));
    let saved = empty(Shape::new([if save {
        (rows * plan.block.nlayers * w).max(1)
    } else {
        1
    }]));
    if rows > 0 {
        let cube_dim = CubeDim::new_1d(64);
        block_layer_forward::launch::<R>(
            &client,
            calculate_cube_count_elemwise(&client, rows, cube_dim),
            cube_dim,
            state.clone().into_tensor_arg(),
            params.into_tensor_arg(),
            table.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ld_rows.clone().into_tensor_arg(),
            saved.clone().into_tensor_arg(),
            rows,
            blocks,
            cols,
            w,
            plan.block.nhidden,
            plan.block.nmlp,
            plan.block.nlayers,
            direction == Direction::Generate,
            save,
            dtype.into(),
        );
    }
    let total = batch * cols;
    if total > 0 {
        let cube_dim = CubeDim::new_1d(256);
        block_layer_finish::launch::<R>(
            &client,
            calculate_cube_count_elemwise(&client, total, cube_dim),
            cube_dim,
            state.into_tensor_arg(),
            table.into_tensor_arg(),
            ld_rows.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            total,
            blocks,
            cols,
            plan.sites.len() + plan.masks.len(),
            true,
            dtype.into(),
        );
    }
    (out, saved)
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FlowBackend
    for CubeBackend<R, F, I, BT>
{
    fn has_kernel() -> bool {
        true
    }

    fn block_layer(
        state: CubeTensor<R>,
        params: CubeTensor<R>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> CubeTensor<R> {
        forward::<R>(state, params, plan, direction, false).0
    }

    fn block_layer_train(
        state: CubeTensor<R>,
        params: CubeTensor<R>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> (CubeTensor<R>, CubeTensor<R>) {
        forward::<R>(state, params, plan, direction, true)
    }

    fn block_layer_backward(
        saved: CubeTensor<R>,
        params: CubeTensor<R>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
        grad: CubeTensor<R>,
    ) -> (CubeTensor<R>, CubeTensor<R>) {
        let (saved, params, grad) = (
            into_contiguous(saved),
            into_contiguous(params),
            into_contiguous(grad),
        );
        let [batch, cols] = grad.shape().dims::<2>();
        let np = params.shape().num_elements();
        let (w, blocks) = (plan.block.width, plan.blocks());
        let rows = batch * blocks;
        let (client, device, dtype) = (grad.client.clone(), grad.device.clone(), grad.dtype);
        let table = upload_table(&grad, plan);
        // CUDA: up to 4096 units to fill the GPU. wgpu: software adapters (lavapipe, SwiftShader)
        // run the units on the CPU's cores and are fastest with 128 (measured on lavapipe at L=8:
        // 2.0 to 2.6 s/epoch against 2.8 to 3.2 with 256 and 3.4 with 1024).
        let most = if <R as Runtime>::name(&client).contains("cuda") {
            4096
        } else {
            128
        };
        #[cfg(not(target_arch = "wasm32"))]
        let most = std::env::var("NEURALRG_GPU_UNITS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(most);
        let units = backward_units(rows, np, dtype.size(), most);
        let grad_state = empty_device_contiguous_dtype::<R>(
            client.clone(),
            device.clone(),
            Shape::new([batch, cols]),
            dtype,
        );
        let partial = empty_device_contiguous_dtype::<R>(
            client.clone(),
            device,
            Shape::new([np, units]),
            dtype,
        );
        let cube_dim = CubeDim::new_1d(64);
        block_layer_backward::launch::<R>(
            &client,
            calculate_cube_count_elemwise(&client, units, cube_dim),
            cube_dim,
            saved.into_tensor_arg(),
            params.into_tensor_arg(),
            table.clone().into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            grad_state.clone().into_tensor_arg(),
            partial.clone().into_tensor_arg(),
            rows,
            blocks.max(1),
            cols,
            units,
            w,
            plan.block.nhidden,
            plan.block.nmlp,
            plan.block.nlayers,
            direction == Direction::Generate,
            dtype.into(),
        );
        let total = batch * cols;
        if total > 0 {
            let cube_dim = CubeDim::new_1d(256);
            block_layer_finish::launch::<R>(
                &client,
                calculate_cube_count_elemwise(&client, total, cube_dim),
                cube_dim,
                grad.clone().into_tensor_arg(),
                table.into_tensor_arg(),
                // (no log-determinants to add: any float tensor will do)
                grad.into_tensor_arg(),
                grad_state.clone().into_tensor_arg(),
                total,
                blocks,
                cols,
                plan.sites.len() + plan.masks.len(),
                false,
                dtype.into(),
            );
        }
        let summed = Self::float_sum_dim(partial, 1);
        (grad_state, Self::float_reshape(summed, Shape::new([np])))
    }
}
