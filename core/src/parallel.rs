//! Data parallelism (native): one model trained on several devices of one machine with Burn's
//! collective operations (`burn-collective`'s all-reduce between one thread per device).
//!
//! Each replica is a [`Trainer`] of its own on its device. All start from the same state: the
//! leader (the first device) opens the run folder, and the others decode its checkpoint. At
//! every epoch each replica draws the epoch's whole sample stream and keeps its rows of the
//! batch; the per-sample free energies, the loss and the gradients are summed over the group
//! ([`crate::train::Peers`]), so every replica applies the same Adam step, the one of a single
//! device on the whole batch. Only the leader writes checkpoints, records and the summary. A
//! signal stops the whole group at the same epoch, after the leader's checkpoint.
//!
//! Several machines are not supported: Burn 0.21's global (multi-node) collective completes one
//! operation and then waits forever at the next. Its `SyncService::sync`
//! (`burn-collective-0.21.0/src/global/node/sync.rs`) clears a copy of the list of nodes that
//! reached the barrier instead of the list itself, so at the second barrier the list never
//! equals the set of nodes (seen here with two processes on loopback, with the ring and the
//! centralized strategies alike).

use std::ops::Range;
use std::sync::Mutex;

use burn::collective::{
    self, CollectiveConfig, PeerId, ReduceOperation, finish_collective, register, reset_collective,
};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::fused::FlowAutodiff;
use crate::host::block_on;
use crate::run::{self, Parameters, RunError, Summary};
use crate::train::{EpochStats, Peers, Trainer};

/// One data-parallel group at a time per process (the collective's server is per backend).
static SESSION: Mutex<()> = Mutex::new(());

/// A replica's place in the group.
#[derive(Debug, Clone, Copy)]
struct Place {
    peer: PeerId,
    /// `0..count` over the group.
    rank: usize,
    count: usize,
}

/// A trainer's view of the group: the collective's all-reduce.
struct Collective(Place);

/// An all-reduce of the group failed: the replicas cannot go on in step, so the process ends
/// with the message.
fn group_failed(what: &str, e: impl std::fmt::Debug) -> ! {
    eprintln!("neuralrg: data-parallel training stopped: {what} failed ({e:?})");
    std::process::exit(1)
}

fn all_reduce<B: FlowAutodiff>(
    peer: PeerId,
    t: Tensor<B::InnerBackend, 1>,
) -> Tensor<B::InnerBackend, 1> {
    let summed = collective::all_reduce::<B::InnerBackend>(
        peer,
        t.into_primitive().tensor(),
        ReduceOperation::Sum,
    )
    .unwrap_or_else(|e| group_failed("an all-reduce", e));
    Tensor::from_primitive(TensorPrimitive::Float(summed))
}

impl<B: FlowAutodiff> Peers<B> for Collective {
    fn rows(&self, batch: usize) -> Range<usize> {
        rows(batch, self.0.rank, self.0.count)
    }
    fn sum(&self, t: Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1> {
        all_reduce::<B>(self.0.peer, t)
    }
    fn wants_stop(&self) -> bool {
        run::stop_requested()
    }
}

/// Replica `rank` of `count`'s rows of a batch: contiguous, sizes differing by at most one.
pub fn rows(batch: usize, rank: usize, count: usize) -> Range<usize> {
    batch * rank / count..batch * (rank + 1) / count
}

/// A replica that is not the leader: starts from the leader's checkpoint and trains in step
/// until the group ends (the run's last epoch, a divergence the leader reports, or an agreed
/// stop).
fn follow<B: FlowAutodiff>(
    place: Place,
    params: &Parameters,
    checkpoint: &[u8],
    device: B::Device,
) -> Result<(), RunError> {
    let mut trainer = Trainer::<B>::from_checkpoint(params.config.clone(), checkpoint, &device)
        .map_err(|e| RunError::Io(e.to_string()))?;
    trainer.join(Box::new(Collective(place)));
    while trainer.epoch < params.options.epochs {
        if block_on(trainer.step()).is_err() || trainer.stop_agreed() == Some(true) {
            break;
        }
    }
    Ok(())
}

/// Registers a replica with the collective (every replica of the group).
fn join<B: FlowAutodiff>(place: Place, device: &B::Device, config: &CollectiveConfig) {
    register::<B::InnerBackend>(place.peer, device.clone(), config.clone())
        .unwrap_or_else(|e| group_failed("joining the group", e));
}

/// Trains the run `params` (a new one, or with `resume` its folder's run, as [`run::open`])
/// data-parallel on `devices`, one replica thread each, and returns its summary. `on_epoch`
/// sees the leader's epochs.
pub fn train<B: FlowAutodiff>(
    params: Parameters,
    resume: bool,
    devices: Vec<B::Device>,
    on_epoch: impl FnMut(&EpochStats, &Trainer<B>),
) -> Result<Summary, RunError> {
    let _session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    reset_collective::<B::InnerBackend>();
    let count = devices.len();
    let config = CollectiveConfig::default().with_num_devices(count);
    let place = |rank: usize| Place {
        peer: PeerId::from(rank),
        rank,
        count,
    };
    // The leader opens the run before anyone joins: a refused folder refuses the whole run.
    let mut opened = run::open::<B>(&params, resume, &devices[0])?;
    let checkpoint = std::sync::Arc::new(
        opened
            .trainer
            .to_checkpoint()
            .map_err(|e| RunError::Io(e.to_string()))?,
    );
    let mut followers = Vec::new();
    for (i, device) in devices.iter().enumerate().skip(1) {
        let (place, device, config) = (place(i), device.clone(), config.clone());
        let (params, checkpoint) = (params.clone(), checkpoint.clone());
        followers.push(std::thread::spawn(move || {
            join::<B>(place, &device, &config);
            if let Err(e) = follow::<B>(place, &params, &checkpoint, device) {
                group_failed("a replica", e.to_string());
            }
            let _ = finish_collective::<B::InnerBackend>(place.peer);
        }));
    }
    join::<B>(place(0), &devices[0], &config);
    opened.trainer.join(Box::new(Collective(place(0))));
    let result = run::train::<B>(opened, params, on_epoch);
    // The other replicas end with the leader unless it failed on its own (an I/O error): then
    // they wait on it forever, and the process ends without them.
    if matches!(
        result,
        Ok(_) | Err(RunError::Interrupted(_) | RunError::Diverged(_))
    ) {
        let _ = finish_collective::<B::InnerBackend>(place(0).peer);
        for f in followers {
            let _ = f.join();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::rows;

    #[test]
    fn rows_cover_the_batch_once() {
        for (batch, count) in [(512, 2), (7, 3), (5, 5), (10, 4)] {
            let all: Vec<usize> = (0..count).flat_map(|r| rows(batch, r, count)).collect();
            assert_eq!(all, (0..batch).collect::<Vec<_>>());
            for r in 0..count {
                let n = rows(batch, r, count).len();
                assert!(
                    n == batch / count || n == batch / count + 1,
                    "{batch} {count} {r}"
                );
            }
        }
    }
}
