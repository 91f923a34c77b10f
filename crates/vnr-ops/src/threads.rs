//! One CPU thread pool for training: candle's element-wise ops on the calling thread.
//!
//! candle 0.11 runs its CPU element-wise ops (and so the gradient sums of every backward pass)
//! on a barrier pool of its own, `candle-bp-*` threads that spin for 25 000 pause instructions
//! after each op before parking, beside rayon's pool, where the vnr-ops kernels run. Both pools
//! are sized to the machine, so between two convolutions a spinning candle worker holds a core
//! that rayon's workers need, and the calling thread spins until a descheduled candle worker
//! finishes its share. In a RenderNet training step on two cores this waiting was over half of
//! the CPU time (`crates/vnr-models/benches/train_step.rs`). PyTorch, which these steps are
//! compared with, has one pool for both kinds of work.
//!
//! [`single_pool`] gives candle's pool no workers (`CANDLE_NUM_THREADS=1`), so its element-wise
//! ops run on the calling thread between the rayon-parallel kernels. It reads and writes the
//! process environment, which candle reads once, when its pool first starts: call it first
//! thing in `main`, before any thread is spawned.

/// The environment variable candle 0.11 sizes its barrier pool by.
pub const CANDLE_NUM_THREADS: &str = "CANDLE_NUM_THREADS";

/// Sets `CANDLE_NUM_THREADS=1` unless the variable is already set (a user's choice wins). Call
/// it at the start of `main`, before any other thread exists and before the first candle op: it
/// changes the process environment, and candle reads the variable only when its pool first
/// starts.
pub fn single_pool() {
    if std::env::var_os(CANDLE_NUM_THREADS).is_none() {
        std::env::set_var(CANDLE_NUM_THREADS, "1");
    }
}
