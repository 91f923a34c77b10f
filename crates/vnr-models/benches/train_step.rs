//! One training step (forward, loss, backward, optimiser update) of the small RenderNet and
//! ConvDeconv configurations, to compare with PyTorch: `tools/bench/train_step_peer.py` builds
//! the same models and prints our time / theirs from these results.
//!
//! `cargo bench -p vnr-models --bench train_step [-- FILTER]`
//!
//! The steps run as vnr's programs do (`vnr_train::configure_process_for_training`), with
//! candle's element-wise ops on the calling thread: candle 0.11 otherwise runs them on a spinning barrier pool
//! of its own beside rayon's (which runs the vnr-ops kernels), and the two pools fight for the
//! cores. With `CANDLE_NUM_THREADS` set, the group is `train_step_candle_threads_N` instead of
//! `train_step`; the peer script times candle's own pool that way too.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

mod support;

/// The timed cases (the 256³ reference is measured for memory only, by `train_step_once`).
const TIMED: [&str; 3] = [
    "rendernet_small_b4",
    "convdeconv_small32_b8",
    "convdeconv_small64_b4",
];

fn train_step(c: &mut Criterion) {
    let group_name = match std::env::var(vnr_ops::threads::CANDLE_NUM_THREADS) {
        Ok(n) => format!("train_step_candle_threads_{n}"),
        Err(_) => "train_step".to_string(),
    };
    vnr_train::configure_process_for_training();
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for name in TIMED {
        let mut step = support::Step::new(name).expect("building the case");
        group.bench_function(name, |b| b.iter(|| step.run().expect("training step")));
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
