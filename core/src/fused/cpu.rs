//! The block layer on the CPU (Burn's Flex backend, natively and in wasm32): plain Rust over
//! the tensors' host data.
//!
//! Rows (one block of one sample) are processed `LANES` at a time, one row per SIMD lane: every
//! value of the computation is a lane vector, every weight a broadcast scalar, so the block's
//! weights (6,320 numbers for the paper's network, 25 KB in f32) stay in L1 and each multiply-add
//! serves `LANES` rows. Natively the AVX2/FMA version is chosen at run time (else SSE2); in wasm32
//! the crate is built with `simd128`. `exp` (in the ELUs and the scales) and `tanh` are
//! polynomial in f32 ([`exp_f32`]: relative error below 3e-7; [`tanh_f32`]: absolute error below
//! 3e-7, both tested), the standard library's in f64; the ELU is `max(x, 0) + e^min(x, 0) - 1`,
//! without a branch or a select ([`elu_f32`]). The ELU's and tanh's derivatives are taken from
//! their outputs. The forward passes read the weights transposed (one output's weights
//! contiguous, copied once per call).
//!
//! For training, the forward pass keeps each coupling layer's input of every row (`nlayers x
//! width` values per row) and nothing else; the backward pass walks the coupling layers back
//! from those, recomputing each MLP's activations. Parameter gradients are summed over a group's
//! lanes in registers and accumulate in one register's worth of lanes per parameter (a coupling
//! layer's accumulators stay in L1); those are summed at the end of each chunk of rows, and the
//! chunks' sums are added in chunk order: the result does not depend on the number of threads
//! (it does, in the last bits, on the instruction set: 16 lanes and fused multiply-adds with
//! AVX2, 32 lanes without them in the portable code). Chunks run on rayon's threads natively
//! (`RAYON_NUM_THREADS`), one after another in wasm32.

use std::ops::{Add, Div, Mul, Neg, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};

use super::{FlowBackend, LayerPlan};
use crate::coupling::{CouplingLayout, Dense, Direction};

impl FlowBackend for Flex {
    fn has_kernel() -> bool {
        true
    }

    fn block_layer(
        state: FlexTensor,
        params: FlexTensor,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> FlexTensor {
        let shape = state.shape();
        let (state, params) = (state.to_contiguous(), params.to_contiguous());
        let data = match state.dtype() {
            DType::F32 => TensorData::new(
                forward::<f32>(slice(&state), slice(&params), plan, direction),
                shape,
            ),
            DType::F64 => TensorData::new(
                forward::<f64>(slice(&state), slice(&params), plan, direction),
                shape,
            ),
            other => panic!("the CPU block-layer kernel runs in f32 or f64, not {other:?}"),
        };
        FlexTensor::from_data(data)
    }

    fn block_layer_train(
        state: FlexTensor,
        params: FlexTensor,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> (FlexTensor, FlexTensor) {
        let shape = state.shape();
        let (state, params) = (state.to_contiguous(), params.to_contiguous());
        fn pack<E: burn::tensor::Element>(
            (out, saved): (Vec<E>, Vec<E>),
            shape: burn::tensor::Shape,
        ) -> (FlexTensor, FlexTensor) {
            let n = saved.len();
            (
                FlexTensor::from_data(TensorData::new(out, shape)),
                FlexTensor::from_data(TensorData::new(saved, [n])),
            )
        }
        match state.dtype() {
            DType::F32 => pack(
                forward_saving::<f32>(slice(&state), slice(&params), plan, direction),
                shape,
            ),
            DType::F64 => pack(
                forward_saving::<f64>(slice(&state), slice(&params), plan, direction),
                shape,
            ),
            other => panic!("the CPU block-layer kernel runs in f32 or f64, not {other:?}"),
        }
    }

    fn block_layer_backward(
        saved: FlexTensor,
        params: FlexTensor,
        plan: &Arc<LayerPlan>,
        direction: Direction,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let (shape, pshape) = (grad.shape(), params.shape());
        let (saved, params, grad) = (
            saved.to_contiguous(),
            params.to_contiguous(),
            grad.to_contiguous(),
        );
        let (gs, gp) = match grad.dtype() {
            DType::F32 => {
                let (gs, gp) =
                    backward::<f32>(slice(&saved), slice(&params), slice(&grad), plan, direction);
                (TensorData::new(gs, shape), TensorData::new(gp, pshape))
            }
            DType::F64 => {
                let (gs, gp) =
                    backward::<f64>(slice(&saved), slice(&params), slice(&grad), plan, direction);
                (TensorData::new(gs, shape), TensorData::new(gp, pshape))
            }
            other => panic!("the CPU block-layer kernel runs in f32 or f64, not {other:?}"),
        };
        (FlexTensor::from_data(gs), FlexTensor::from_data(gp))
    }
}

/// A contiguous tensor's values as `E` (the state's float type).
trait HostSlice {
    fn host(t: &FlexTensor) -> &[Self]
    where
        Self: Sized;
}

impl HostSlice for f32 {
    fn host(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("a contiguous f32 tensor")
    }
}

impl HostSlice for f64 {
    fn host(t: &FlexTensor) -> &[f64] {
        t.as_slice::<f64>().expect("a contiguous f64 tensor")
    }
}

fn slice<E: HostSlice>(t: &FlexTensor) -> &[E] {
    E::host(t)
}

/// The kernel's instruction set, chosen once per process (see [`isa`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 256-bit AVX2 with fused multiply-add (x86_64, detected at run time).
    Avx2Fma,
    /// Whatever the build targets by default: SSE2 on x86_64, `simd128` in wasm32 when the
    /// crate is built with it, scalar code elsewhere.
    Portable,
}

static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The instruction set the kernel uses: AVX2/FMA where the CPU has it, unless
/// [`use_portable`] or the environment (`NEURALRG_CPU_KERNEL=portable`, for benchmarks) asked
/// otherwise.
pub fn isa() -> Isa {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Isa::Avx2Fma,
        2 => Isa::Portable,
        _ => {
            let forced = std::env::var("NEURALRG_CPU_KERNEL").is_ok_and(|v| v == "portable");
            let detected = if avx2_fma() && !forced {
                Isa::Avx2Fma
            } else {
                Isa::Portable
            };
            CHOSEN.store(
                if detected == Isa::Avx2Fma { 1 } else { 2 },
                Ordering::Relaxed,
            );
            detected
        }
    }
}

/// Makes the kernel use the portable code even where AVX2 is available (tests of both paths).
pub fn use_portable(portable: bool) {
    CHOSEN.store(
        if portable || !avx2_fma() { 2 } else { 1 },
        Ordering::Relaxed,
    );
}

fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The float types of the kernel: f32 (polynomial `exp` and `tanh`) and f64 (the standard
/// library's).
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    /// `e^x`; with fused multiply-adds where `FMA`.
    fn exp<const FMA: bool>(self) -> Self;
    /// `tanh x`; with fused multiply-adds where `FMA`.
    fn tanh<const FMA: bool>(self) -> Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The ELU: `x` if `x > 0`, else `e^x - 1`; with fused multiply-adds where `FMA`.
    fn elu<const FMA: bool>(self) -> Self;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    #[inline(always)]
    fn exp<const FMA: bool>(self) -> f32 {
        exp_f32_with::<FMA>(self)
    }
    #[inline(always)]
    fn tanh<const FMA: bool>(self) -> f32 {
        tanh_f32_with::<FMA>(self)
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn elu<const FMA: bool>(self) -> f32 {
        elu_f32_with::<FMA>(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    #[inline(always)]
    fn exp<const FMA: bool>(self) -> f64 {
        f64::exp(self)
    }
    #[inline(always)]
    fn tanh<const FMA: bool>(self) -> f64 {
        f64::tanh(self)
    }
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }
    #[inline(always)]
    fn elu<const FMA: bool>(self) -> f64 {
        if self > 0.0 { self } else { self.exp() - 1.0 }
    }
}

/// `x` if `x >= lo`, else `lo` (NaN stays NaN): one `maxps`/`f32x4.pmax`.
#[inline(always)]
fn at_least(x: f32, lo: f32) -> f32 {
    if x < lo { lo } else { x }
}

/// `x` if `x <= hi`, else `hi` (NaN stays NaN): one `minps`/`f32x4.pmin`.
#[inline(always)]
fn at_most(x: f32, hi: f32) -> f32 {
    if hi < x { hi } else { x }
}

/// The range of [`exp_in_range`]: `e^x` is below f32's smallest normal number under it, and
/// overflows just above it.
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.37;

/// `e^x` in f32 without a library call (so that it vectorizes): Cephes' `expf` reduction
/// `x = n ln 2 + r`, a degree-6 polynomial for `e^r`, `2^n` from the exponent bits. Relative error
/// below 3e-7 on `[-87, 88]` (tested, with and without fused multiply-adds); 0 below -87.3,
/// `inf` above 88.37 (the true overflow is at 88.72).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_f32_with::<false>(x)
}

/// [`exp_f32`], with fused multiply-adds in the polynomial where `FMA`.
#[inline(always)]
pub fn exp_f32_with<const FMA: bool>(x: f32) -> f32 {
    let e = exp_in_range::<FMA>(at_most(at_least(x, EXP_MIN), EXP_MAX));
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        e
    }
}

/// `e^x` for `x` in `[EXP_MIN, EXP_MAX]` (NaN gives NaN), without range checks.
#[inline(always)]
fn exp_in_range<const FMA: bool>(xc: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick (no `round` call).
    const MAGIC: f32 = 12_582_912.0;
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let t = madd(xc, LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = madd(n, -C1, xc);
    let r = madd(n, -C2, r);
    let mut p = 1.987_569_1e-4f32;
    p = madd(p, r, 1.398_199_9e-3);
    p = madd(p, r, 8.333_452e-3);
    p = madd(p, r, 4.166_579_6e-2);
    p = madd(p, r, 1.666_666_5e-1);
    p = madd(p, r, 0.5);
    let p = madd(p * r, r, r) + 1.0;
    // 2^n: n sits in the low mantissa bits of t.
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// The ELU in f32, `x` if `x > 0`, else `e^x - 1`, as `max(x, 0) + e^min(x, 0) - 1` with the
/// polynomial `e^x` of [`exp_f32`] (exactly 1 at 0, so positive inputs come back unchanged):
/// two `max`/`min` instructions instead of a compare and a select, which cost several
/// instructions each in wasm32. Absolute error below 3e-7 (tested); NaN stays NaN.
#[inline(always)]
pub fn elu_f32(x: f32) -> f32 {
    elu_f32_with::<false>(x)
}

/// [`elu_f32`], with fused multiply-adds where `FMA`.
#[inline(always)]
pub fn elu_f32_with<const FMA: bool>(x: f32) -> f32 {
    let neg = at_most(x, 0.0);
    at_least(x, 0.0) + (exp_in_range::<FMA>(at_least(neg, EXP_MIN)) - 1.0)
}

/// `tanh x` in f32 from [`exp_f32`]: `(e^{2x} - 1) / (e^{2x} + 1)`, with `x` clamped to
/// `[-9, 9]` (where `tanh` is 1 to f32 precision), and `x - x^3/3` for `|x| < 0.01`, where the
/// quotient loses relative precision. Absolute error below 3e-7, relative error below 1e-4
/// (tested).
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    tanh_f32_with::<false>(x)
}

/// [`tanh_f32`], with fused multiply-adds where `FMA`.
#[inline(always)]
pub fn tanh_f32_with<const FMA: bool>(x: f32) -> f32 {
    let e = exp_in_range::<FMA>(2.0 * at_most(at_least(x, -9.0), 9.0));
    let t = (e - 1.0) / (e + 1.0);
    if x.abs() < 0.01 {
        x - x * x * x / 3.0
    } else {
        t
    }
}

/// A lane vector: one value per row of a group.
type V<F, const L: usize> = [F; L];

#[inline(always)]
fn splat<F: Real, const L: usize>(v: F) -> V<F, L> {
    [v; L]
}

/// `acc + a * b` per lane (`b` a broadcast scalar); fused on CPUs with FMA.
#[inline(always)]
fn fma<F: Real, const L: usize, const FMA: bool>(acc: &mut V<F, L>, a: &V<F, L>, b: F) {
    for l in 0..L {
        acc[l] = if FMA {
            a[l].mul_add(b, acc[l])
        } else {
            acc[l] + a[l] * b
        };
    }
}

/// `acc + sum_k a_k * b_k` where `a` and `b` are lane vectors split into registers of `R`
/// lanes: the group's products are summed in registers, and only an `R`-lane accumulator per
/// parameter lives in memory (small enough for L1).
#[inline(always)]
fn acc_vv<F: Real, const L: usize, const R: usize, const FMA: bool>(
    acc: &mut V<F, R>,
    a: &V<F, L>,
    b: &V<F, L>,
) {
    const { assert!(L.is_multiple_of(R), "a group is whole registers") };
    let mut t = [F::ZERO; R];
    for k in 0..L / R {
        for r in 0..R {
            t[r] = if FMA {
                a[k * R + r].mul_add(b[k * R + r], t[r])
            } else {
                t[r] + a[k * R + r] * b[k * R + r]
            };
        }
    }
    for r in 0..R {
        acc[r] = acc[r] + t[r];
    }
}

/// `acc + sum_k a_k`, `a` split into registers of `R` lanes.
#[inline(always)]
fn acc_v<F: Real, const L: usize, const R: usize>(acc: &mut V<F, R>, a: &V<F, L>) {
    const { assert!(L.is_multiple_of(R), "a group is whole registers") };
    let mut t = [F::ZERO; R];
    for k in 0..L / R {
        for r in 0..R {
            t[r] = t[r] + a[k * R + r];
        }
    }
    for r in 0..R {
        acc[r] = acc[r] + t[r];
    }
}

/// The ELU in place: `x` if `x > 0`, else `e^x - 1`.
#[inline(always)]
fn elu<F: Real, const L: usize, const FMA: bool>(x: &mut V<F, L>) {
    for v in x.iter_mut() {
        *v = v.elu::<FMA>();
    }
}

/// `f` on every lane.
#[inline(always)]
fn map<F: Real, const L: usize>(x: &V<F, L>, f: impl Fn(F) -> F) -> V<F, L> {
    let mut out = *x;
    for v in out.iter_mut() {
        *v = f(*v);
    }
    out
}

/// The ELU's derivative from its output `y`: 1 where `y > 0`, else `y + 1` (`= e^x`).
#[inline(always)]
fn elu_grad<F: Real>(y: F) -> F {
    let g = y + F::ONE;
    if F::ONE < g { F::ONE } else { g }
}

/// Rows per chunk: the unit of parallel work and of the parameter-gradient sums.
const CHUNK_ROWS: usize = 2048;

/// The plan's numbers the kernel needs, in the order of use.
struct Geometry<'a> {
    plan: &'a LayerPlan,
    layout: Vec<CouplingLayout>,
    /// Coupling layers in the order they are applied.
    order: Vec<usize>,
    /// Per coupling layer: kept entries, transformed entries.
    kept: Vec<Vec<usize>>,
    changed: Vec<Vec<usize>>,
    direction: Direction,
    /// Columns of the state, `N + 1`.
    cols: usize,
    blocks: usize,
}

impl<'a> Geometry<'a> {
    fn new(plan: &'a LayerPlan, direction: Direction) -> Self {
        let w = plan.block.width;
        assert!(
            w <= 4,
            "the CPU kernel takes blocks of at most 4 values, not {w}"
        );
        let nl = plan.block.nlayers;
        let order = match direction {
            Direction::Generate => (0..nl).collect(),
            Direction::Infer => (0..nl).rev().collect(),
        };
        let pick = |keep: u8| -> Vec<Vec<usize>> {
            (0..nl)
                .map(|n| (0..w).filter(|&e| plan.masks[n * w + e] == keep).collect())
                .collect()
        };
        Self {
            plan,
            layout: plan.block.layout(),
            order,
            kept: pick(1),
            changed: pick(0),
            direction,
            cols: plan.n + 1,
            blocks: plan.blocks(),
        }
    }

    fn width(&self) -> usize {
        self.plan.block.width
    }

    fn hidden(&self) -> usize {
        self.plan.block.nhidden
    }

    /// Where row `r`'s sample starts in the state, and its block.
    fn row(&self, r: usize) -> (usize, usize) {
        (r / self.blocks * self.cols, r % self.blocks)
    }
}

/// A pointer that several threads write through, each to its own elements.
#[derive(Clone, Copy)]
struct Shared<F>(*mut F);
unsafe impl<F> Send for Shared<F> {}
unsafe impl<F> Sync for Shared<F> {}

impl<F> Shared<F> {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn ptr(self) -> *mut F {
        self.0
    }
}

/// Working memory of one group: the hidden activations of `S` and `T`, and two buffers of
/// hidden-layer gradients.
struct Scratch<F, const L: usize> {
    s: Vec<V<F, L>>,
    t: Vec<V<F, L>>,
    grad: Vec<V<F, L>>,
    grad_next: Vec<V<F, L>>,
}

impl<F: Real, const L: usize> Scratch<F, L> {
    fn new(g: &Geometry) -> Self {
        let acts = g.plan.block.nmlp * g.hidden();
        Self {
            s: vec![splat(F::ZERO); acts],
            t: vec![splat(F::ZERO); acts],
            grad: vec![splat(F::ZERO); g.hidden()],
            grad_next: vec![splat(F::ZERO); g.hidden()],
        }
    }
}

/// One MLP on a group: hidden activations into `acts` (`nmlp x H`), outputs at `changed`.
/// `pt` holds the parameters with every weight transposed (see [`transposed`]), so that one
/// output's weights are contiguous.
#[inline(always)]
fn mlp_forward<F: Real, const L: usize, const FMA: bool>(
    pt: &[F],
    dense: &[Dense],
    kept: &[usize],
    changed: &[usize],
    y: &[V<F, L>; 4],
    acts: &mut [V<F, L>],
    out: &mut [V<F, L>; 4],
) {
    let h = dense[0].outputs;
    let first = &dense[0];
    for (j, act) in acts[..h].iter_mut().enumerate() {
        let mut acc = splat(pt[first.bias + j]);
        let w = output_weights(pt, first, j);
        for &i in kept {
            fma::<F, L, FMA>(&mut acc, &y[i], w[i]);
        }
        elu::<F, L, FMA>(&mut acc);
        *act = acc;
    }
    let hidden = dense.len() - 1;
    for (l, d) in dense.iter().enumerate().take(hidden).skip(1) {
        let (prev, cur) = acts.split_at_mut(l * h);
        let prev = &prev[(l - 1) * h..];
        for (j, c) in cur[..h].iter_mut().enumerate() {
            let mut acc = splat(pt[d.bias + j]);
            for (a, &wi) in prev.iter().zip(output_weights(pt, d, j)) {
                fma::<F, L, FMA>(&mut acc, a, wi);
            }
            elu::<F, L, FMA>(&mut acc);
            *c = acc;
        }
    }
    let last = &dense[hidden];
    let top = &acts[(hidden - 1) * h..hidden * h];
    for &c in changed {
        let mut acc = splat(pt[last.bias + c]);
        for (a, &wi) in top.iter().zip(output_weights(pt, last, c)) {
            fma::<F, L, FMA>(&mut acc, a, wi);
        }
        out[c] = acc;
    }
}

/// The parameters with every dense layer's weight `[inputs, outputs]` stored transposed,
/// `[outputs, inputs]` (biases and scales where they were): the forward passes' layout, read
/// through [`output_weights`].
fn transposed<F: Real>(p: &[F], layout: &[CouplingLayout]) -> Vec<F> {
    let mut t = p.to_vec();
    for d in layout.iter().flat_map(|lay| lay.s.iter().chain(&lay.t)) {
        for i in 0..d.inputs {
            for j in 0..d.outputs {
                t[d.weight + j * d.inputs + i] = p[d.weight + i * d.outputs + j];
            }
        }
    }
    t
}

/// The weights into output `j` of dense layer `d`, one per input, in [`transposed`] parameters.
#[inline(always)]
fn output_weights<'a, F>(pt: &'a [F], d: &Dense, j: usize) -> &'a [F] {
    &pt[d.weight + j * d.inputs..d.weight + (j + 1) * d.inputs]
}

/// Backpropagates `delta` (the gradient of the MLP's outputs, at `changed`) through one MLP
/// whose input was `y` at `kept` and whose activations are `acts`: accumulates the parameter
/// gradients into `gp` (one register's lanes per parameter) and adds the input gradient to `gy`
/// at `kept`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mlp_backward<F: Real, const L: usize, const R: usize, const FMA: bool>(
    p: &[F],
    dense: &[Dense],
    kept: &[usize],
    changed: &[usize],
    y: &[V<F, L>; 4],
    acts: &[V<F, L>],
    delta: &[V<F, L>; 4],
    gp: &mut [V<F, R>],
    grad: &mut [V<F, L>],
    grad_next: &mut [V<F, L>],
    gy: &mut [V<F, L>; 4],
) {
    let h = dense[0].outputs;
    let hidden = dense.len() - 1;
    let last = &dense[hidden];
    let o = last.outputs;
    let top = &acts[(hidden - 1) * h..hidden * h];
    for &c in changed {
        acc_v::<F, L, R>(&mut gp[last.bias + c], &delta[c]);
    }
    for (i, a) in top.iter().enumerate() {
        let mut g = splat(F::ZERO);
        for &c in changed {
            fma::<F, L, FMA>(&mut g, &delta[c], p[last.weight + i * o + c]);
            acc_vv::<F, L, R, FMA>(&mut gp[last.weight + i * o + c], a, &delta[c]);
        }
        grad[i] = g;
    }
    for l in (0..hidden).rev() {
        let d = &dense[l];
        let out = &acts[l * h..(l + 1) * h];
        // Through the ELU: grad becomes the gradient of the pre-activation.
        for (g, a) in grad.iter_mut().zip(out) {
            for k in 0..L {
                g[k] = g[k] * elu_grad(a[k]);
            }
        }
        for j in 0..h {
            acc_v::<F, L, R>(&mut gp[d.bias + j], &grad[j]);
        }
        if l > 0 {
            let prev = &acts[(l - 1) * h..l * h];
            for (i, a) in prev.iter().enumerate() {
                let mut g = splat(F::ZERO);
                let row = d.weight + i * h;
                for j in 0..h {
                    fma::<F, L, FMA>(&mut g, &grad[j], p[row + j]);
                    acc_vv::<F, L, R, FMA>(&mut gp[row + j], a, &grad[j]);
                }
                grad_next[i] = g;
            }
            grad.copy_from_slice(grad_next);
        } else {
            for &k in kept {
                let row = d.weight + k * h;
                let mut g = splat(F::ZERO);
                for j in 0..h {
                    fma::<F, L, FMA>(&mut g, &grad[j], p[row + j]);
                    acc_vv::<F, L, R, FMA>(&mut gp[row + j], &y[k], &grad[j]);
                }
                for q in 0..L {
                    gy[k][q] = gy[k][q] + g[q];
                }
            }
        }
    }
}

/// One coupling layer forward on a group, in place; adds its log-determinant to `ld`.
#[inline(always)]
fn coupling_forward<F: Real, const L: usize, const FMA: bool>(
    g: &Geometry,
    pt: &[F],
    n: usize,
    y: &mut [V<F, L>; 4],
    ld: &mut V<F, L>,
    scratch: &mut Scratch<F, L>,
) {
    let lay = &g.layout[n];
    let (kept, changed) = (&g.kept[n], &g.changed[n]);
    let mut a = [splat(F::ZERO); 4];
    let mut t = [splat(F::ZERO); 4];
    mlp_forward::<F, L, FMA>(pt, &lay.s, kept, changed, y, &mut scratch.s, &mut a);
    mlp_forward::<F, L, FMA>(pt, &lay.t, kept, changed, y, &mut scratch.t, &mut t);
    for &c in changed {
        let sc = pt[lay.scale + c];
        let s = map(&a[c], |a| sc * a.tanh::<FMA>());
        match g.direction {
            Direction::Generate => {
                let e = map(&s, |s| s.exp::<FMA>());
                for l in 0..L {
                    y[c][l] = y[c][l] * e[l] + t[c][l];
                    ld[l] = ld[l] + s[l];
                }
            }
            Direction::Infer => {
                let e = map(&s, |s| (-s).exp::<FMA>());
                for l in 0..L {
                    y[c][l] = (y[c][l] - t[c][l]) * e[l];
                    ld[l] = ld[l] - s[l];
                }
            }
        }
    }
}

/// Gathers a group's block values (`count <= L` rows from row `r`; the other lanes are 0).
#[inline(always)]
fn gather<F: Real, const L: usize>(
    g: &Geometry,
    data: &[F],
    r: usize,
    count: usize,
) -> [V<F, L>; 4] {
    let w = g.width();
    let mut y = [splat(F::ZERO); 4];
    for l in 0..count {
        let (base, k) = g.row(r + l);
        for (e, ye) in y.iter_mut().enumerate().take(w) {
            ye[l] = data[base + g.plan.sites[k * w + e]];
        }
    }
    y
}

/// Writes a group's block values back.
#[inline(always)]
fn scatter<F: Real, const L: usize>(
    g: &Geometry,
    out: Shared<F>,
    r: usize,
    count: usize,
    y: &[V<F, L>; 4],
) {
    let w = g.width();
    for l in 0..count {
        let (base, k) = g.row(r + l);
        for (e, ye) in y.iter().enumerate().take(w) {
            // SAFETY: each (row, entry) is a distinct element of `out`, written by one group.
            unsafe { *out.ptr().add(base + g.plan.sites[k * w + e]) = ye[l] };
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_chunk<F: Real, const L: usize, const FMA: bool>(
    g: &Geometry,
    state: &[F],
    pt: &[F],
    first: usize,
    ld_rows: &mut [F],
    out: Shared<F>,
    saved: Option<Shared<F>>,
) {
    let mut scratch = Scratch::<F, L>::new(g);
    let rows = ld_rows.len();
    let (w, nl) = (g.width(), g.order.len());
    let mut r = 0;
    while r < rows {
        let count = L.min(rows - r);
        let mut y = gather::<F, L>(g, state, first + r, count);
        let mut ld = splat(F::ZERO);
        for (step, &n) in g.order.iter().enumerate() {
            if let Some(saved) = saved {
                for l in 0..count {
                    let at = (first + r + l) * nl * w + step * w;
                    for (e, ye) in y.iter().enumerate().take(w) {
                        // SAFETY: each (row, step, entry) is written by one group.
                        unsafe { *saved.ptr().add(at + e) = ye[l] };
                    }
                }
            }
            coupling_forward::<F, L, FMA>(g, pt, n, &mut y, &mut ld, &mut scratch);
        }
        scatter::<F, L>(g, out, first + r, count, &y);
        ld_rows[r..r + count].copy_from_slice(&ld[..count]);
        r += L;
    }
}

/// The backward pass of one coupling layer on a group whose input was `y`: turns `gy` (the
/// gradient of the layer's output) into the gradient of its input and accumulates the
/// parameter gradients into `gp` (one register's lanes per parameter). `gld` is the gradient of
/// the log-determinant.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn coupling_backward<F: Real, const L: usize, const R: usize, const FMA: bool>(
    g: &Geometry,
    p: &[F],
    pt: &[F],
    n: usize,
    y: &[V<F, L>; 4],
    gy: &mut [V<F, L>; 4],
    gld: &V<F, L>,
    gp: &mut [V<F, R>],
    scratch: &mut Scratch<F, L>,
) {
    let lay = &g.layout[n];
    let (kept, changed) = (&g.kept[n], &g.changed[n]);
    let mut a = [splat(F::ZERO); 4];
    let mut t = [splat(F::ZERO); 4];
    mlp_forward::<F, L, FMA>(pt, &lay.s, kept, changed, y, &mut scratch.s, &mut a);
    mlp_forward::<F, L, FMA>(pt, &lay.t, kept, changed, y, &mut scratch.t, &mut t);
    let mut ga = [splat(F::ZERO); 4];
    let mut gt = [splat(F::ZERO); 4];
    for &c in changed {
        let sc = p[lay.scale + c];
        let th = map(&a[c], |a| a.tanh::<FMA>());
        let mut gs = splat::<F, L>(F::ZERO);
        match g.direction {
            Direction::Generate => {
                let e = map(&th, |th| (sc * th).exp::<FMA>());
                for l in 0..L {
                    gs[l] = gy[c][l] * y[c][l] * e[l] + gld[l];
                    gt[c][l] = gy[c][l];
                    gy[c][l] = gy[c][l] * e[l];
                }
            }
            Direction::Infer => {
                let e = map(&th, |th| (-(sc * th)).exp::<FMA>());
                for l in 0..L {
                    let out = (y[c][l] - t[c][l]) * e[l];
                    gs[l] = -(gy[c][l] * out) - gld[l];
                    gt[c][l] = -(gy[c][l] * e[l]);
                    gy[c][l] = gy[c][l] * e[l];
                }
            }
        }
        acc_vv::<F, L, R, false>(&mut gp[lay.scale + c], &gs, &th);
        for l in 0..L {
            ga[c][l] = gs[l] * sc * (F::ONE - th[l] * th[l]);
        }
    }
    let Scratch {
        s: acts_s,
        t: acts_t,
        grad: gbuf,
        grad_next,
        ..
    } = scratch;
    mlp_backward::<F, L, R, FMA>(
        p, &lay.s, kept, changed, y, acts_s, &ga, gp, gbuf, grad_next, gy,
    );
    mlp_backward::<F, L, R, FMA>(
        p, &lay.t, kept, changed, y, acts_t, &gt, gp, gbuf, grad_next, gy,
    );
}

/// The backward pass of a chunk of rows, from the coupling layers' inputs `saved` by the forward
/// pass: the coupling layers are walked back one at a time over all groups of the chunk, so that
/// one coupling layer's gradient accumulators stay in L1 while it is processed.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_chunk<F: Real, const L: usize, const R: usize, const FMA: bool>(
    g: &Geometry,
    saved: &[F],
    p: &[F],
    pt: &[F],
    grad: &[F],
    first: usize,
    rows: usize,
    gp_out: &mut [F],
    gs_out: Shared<F>,
) {
    let mut scratch = Scratch::<F, L>::new(g);
    let mut gp = vec![splat::<F, R>(F::ZERO); p.len()];
    let nlayers = g.order.len();
    let groups = rows.div_ceil(L);
    let count = |gi: usize| L.min(rows - gi * L);
    let w = g.width();
    let mut inputs = vec![[splat::<F, L>(F::ZERO); 4]; groups * nlayers];
    let mut gys = Vec::with_capacity(groups);
    let mut glds = Vec::with_capacity(groups);
    for gi in 0..groups {
        let r = first + gi * L;
        let group = &mut inputs[gi * nlayers..(gi + 1) * nlayers];
        // Padding lanes (past the chunk's last row) repeat the first row's inputs with zero
        // gradients: they add nothing (unless that row itself overflows, which the loss shows).
        for l in 0..L {
            let row = r + if l < count(gi) { l } else { 0 };
            let row = &saved[row * nlayers * w..(row + 1) * nlayers * w];
            for (input, values) in group.iter_mut().zip(row.chunks(w)) {
                for (slot, &v) in input.iter_mut().zip(values) {
                    slot[l] = v;
                }
            }
        }
        gys.push(gather::<F, L>(g, grad, r, count(gi)));
        let mut gld = splat::<F, L>(F::ZERO);
        for (l, v) in gld.iter_mut().enumerate().take(count(gi)) {
            *v = grad[g.row(r + l).0 + g.plan.n];
        }
        glds.push(gld);
    }
    for step in (0..nlayers).rev() {
        let n = g.order[step];
        for gi in 0..groups {
            let y = inputs[gi * nlayers + step];
            coupling_backward::<F, L, R, FMA>(
                g,
                p,
                pt,
                n,
                &y,
                &mut gys[gi],
                &glds[gi],
                &mut gp,
                &mut scratch,
            );
        }
    }
    for (gi, gy) in gys.iter().enumerate() {
        scatter::<F, L>(g, gs_out, first + gi * L, count(gi), gy);
    }
    for (o, acc) in gp_out.iter_mut().zip(&gp) {
        *o = acc.iter().fold(F::ZERO, |s, &v| s + v);
    }
}

/// Runs `f` over the chunks of `rows`, in parallel natively.
fn for_chunks(rows: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let run = |c: usize| {
        let first = c * CHUNK_ROWS;
        f(first, CHUNK_ROWS.min(rows - first));
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..chunks).into_par_iter().for_each(run);
    }
    #[cfg(target_arch = "wasm32")]
    (0..chunks).for_each(run);
}

/// The forward pass on host data: the new state.
pub fn forward<F: Real>(
    state: &[F],
    params: &[F],
    plan: &LayerPlan,
    direction: Direction,
) -> Vec<F> {
    forward_inner(state, params, plan, direction, false).0
}

/// The forward pass for training: the new state and each coupling layer's input for every row
/// (`[rows, nlayers, width]`, rows sample after sample, block after block), which is all that
/// [`backward`] needs.
pub fn forward_saving<F: Real>(
    state: &[F],
    params: &[F],
    plan: &LayerPlan,
    direction: Direction,
) -> (Vec<F>, Vec<F>) {
    forward_inner(state, params, plan, direction, true)
}

fn forward_inner<F: Real>(
    state: &[F],
    params: &[F],
    plan: &LayerPlan,
    direction: Direction,
    save: bool,
) -> (Vec<F>, Vec<F>) {
    let g = Geometry::new(plan, direction);
    assert_eq!(state.len() % g.cols, 0, "state is [batch, N + 1]");
    assert_eq!(params.len(), plan.block.num_params(), "packed parameters");
    let batch = state.len() / g.cols;
    let rows = batch * g.blocks;
    let mut out = state.to_vec();
    let mut ld_rows = vec![F::ZERO; rows];
    let mut saved = vec![
        F::ZERO;
        if save {
            rows * plan.block.nlayers * g.width()
        } else {
            0
        }
    ];
    let out_ptr = Shared(out.as_mut_ptr());
    let ld_ptr = Shared(ld_rows.as_mut_ptr());
    let saved_ptr = save.then_some(Shared(saved.as_mut_ptr()));
    let isa = isa();
    let pt = transposed(params, &g.layout);
    for_chunks(rows, |first, count| {
        // SAFETY: the chunks' ranges of `ld_rows` are disjoint.
        let ld = unsafe { std::slice::from_raw_parts_mut(ld_ptr.ptr().add(first), count) };
        run_forward(isa, &g, state, &pt, first, ld, out_ptr, saved_ptr);
    });
    for b in 0..batch {
        let at = b * g.cols + plan.n;
        out[at] = ld_rows[b * g.blocks..(b + 1) * g.blocks]
            .iter()
            .fold(out[at], |s, &v| s + v);
    }
    (out, saved)
}

/// The backward pass on host data, from the coupling layers' inputs that [`forward_saving`]
/// kept: the gradients of the input state and of the parameters.
pub fn backward<F: Real>(
    saved: &[F],
    params: &[F],
    grad: &[F],
    plan: &LayerPlan,
    direction: Direction,
) -> (Vec<F>, Vec<F>) {
    let g = Geometry::new(plan, direction);
    assert_eq!(params.len(), plan.block.num_params(), "packed parameters");
    assert_eq!(grad.len() % g.cols, 0, "the gradient is [batch, N + 1]");
    let batch = grad.len() / g.cols;
    let rows = batch * g.blocks;
    assert_eq!(
        saved.len(),
        rows * plan.block.nlayers * g.width(),
        "the coupling layers' inputs of every row"
    );
    // Sites outside the layer and the log-determinant pass their gradient through.
    let mut gs = grad.to_vec();
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let mut partial = vec![F::ZERO; chunks * params.len()];
    let gs_ptr = Shared(gs.as_mut_ptr());
    let part_ptr = Shared(partial.as_mut_ptr());
    let isa = isa();
    let np = params.len();
    let pt = transposed(params, &g.layout);
    for_chunks(rows, |first, count| {
        // SAFETY: each chunk owns its row of `partial`.
        let gp = unsafe {
            std::slice::from_raw_parts_mut(part_ptr.ptr().add(first / CHUNK_ROWS * np), np)
        };
        run_backward(isa, &g, saved, params, &pt, grad, first, count, gp, gs_ptr);
    });
    let mut gp = vec![F::ZERO; np];
    for c in partial.chunks(np) {
        for (a, &b) in gp.iter_mut().zip(c) {
            *a = *a + b;
        }
    }
    (gs, gp)
}

/// Lanes per group with AVX2: 16 (two 256-bit registers of f32, four of f64).
#[cfg(target_arch = "x86_64")]
const LANES_F32: usize = 16;
/// Lanes of one AVX2 register of f32: the width of the parameter-gradient accumulators.
#[cfg(target_arch = "x86_64")]
const REGISTER_F32: usize = 8;
/// Lanes of one 128-bit register of f32 (SSE2, wasm `simd128`): the portable accumulators' width.
const REGISTER_PORTABLE: usize = 4;
/// Lanes per group in the portable code's backward pass (SSE2, wasm `simd128`: 128-bit
/// registers): 32 measured faster than 16 or 64 there.
const LANES_PORTABLE: usize = 32;
/// Lanes per group in the portable code's forward passes: 16, where the ELU's polynomial on
/// 32 lanes runs out of registers (in V8's code for wasm32: an L=8 block layer's forward pass
/// 16 ms against 21 ms).
const LANES_PORTABLE_FORWARD: usize = 16;

#[allow(clippy::too_many_arguments)]
fn run_forward<F: Real>(
    isa: Isa,
    g: &Geometry,
    state: &[F],
    pt: &[F],
    first: usize,
    ld: &mut [F],
    out: Shared<F>,
    saved: Option<Shared<F>>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma {
        // SAFETY: `isa()` found AVX2 and FMA on this CPU.
        unsafe { avx2::forward(g, state, pt, first, ld, out, saved) };
        return;
    }
    let _ = isa;
    forward_chunk::<F, LANES_PORTABLE_FORWARD, false>(g, state, pt, first, ld, out, saved);
}

#[allow(clippy::too_many_arguments)]
fn run_backward<F: Real>(
    isa: Isa,
    g: &Geometry,
    saved: &[F],
    p: &[F],
    pt: &[F],
    grad: &[F],
    first: usize,
    rows: usize,
    gp: &mut [F],
    gs: Shared<F>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma {
        // SAFETY: `isa()` found AVX2 and FMA on this CPU.
        unsafe { avx2::backward(g, saved, p, pt, grad, first, rows, gp, gs) };
        return;
    }
    let _ = isa;
    backward_chunk::<F, LANES_PORTABLE, REGISTER_PORTABLE, false>(
        g, saved, p, pt, grad, first, rows, gp, gs,
    );
}

/// The same code compiled for AVX2 and FMA (the helpers above are `inline(always)`, so they
/// are compiled with these features inside these functions).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward<F: Real>(
        g: &Geometry,
        state: &[F],
        pt: &[F],
        first: usize,
        ld: &mut [F],
        out: Shared<F>,
        saved: Option<Shared<F>>,
    ) {
        forward_chunk::<F, LANES_F32, true>(g, state, pt, first, ld, out, saved);
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward<F: Real>(
        g: &Geometry,
        saved: &[F],
        p: &[F],
        pt: &[F],
        grad: &[F],
        first: usize,
        rows: usize,
        gp: &mut [F],
        gs: Shared<F>,
    ) {
        backward_chunk::<F, LANES_F32, REGISTER_F32, true>(
            g, saved, p, pt, grad, first, rows, gp, gs,
        );
    }
}
