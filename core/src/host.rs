//! Moving tensors to the host. Reading a GPU tensor is asynchronous in a browser (WebGPU maps
//! buffers with a callback), so every function of the library that reads device data is written
//! once, as an `async fn`; native code calls it through [`block_on`], which returns at once on
//! the CPU backends and waits for the device on the GPU ones.

use burn::tensor::{Tensor, backend::Backend};

/// The values of `t`, in order, as `f64`.
pub async fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data_async()
        .await
        .unwrap_or_else(|e| panic!("reading a tensor from the device failed: {e:?}"))
        .iter::<f64>()
        .collect()
}

/// Runs a future of this library to completion on native platforms.
///
/// Panics on the web, where blocking is impossible: await the future there instead.
pub fn block_on<F: Future>(f: F) -> F::Output {
    burn::tensor::try_read_sync(f)
        .expect("blocking on a device read is impossible here: await the async function")
}
