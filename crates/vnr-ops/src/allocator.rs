//! Process-wide allocator tuning for training binaries.
//!
//! glibc's `malloc` serves a request above its mmap threshold with a fresh `mmap` and returns it
//! to the kernel on `free`. The threshold adapts upwards to the largest block freed so far, but
//! never beyond 32 MiB (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit). A DeepSDF training step
//! (16,384 rows × 512 features × f32) makes dozens of tensors of *exactly* 32 MiB each, so every
//! one of them is mmapped, page-faulted in, zeroed by the kernel and unmapped again: profiles of
//! `vnr train deepsdf` showed about 20 % of the step in page faults and page clearing.
//! [`keep_freed_memory`] raises the thresholds so freed blocks stay in the heap and are reused.
//!
//! Measured on the 2-core development machine (reference decoder, 16,384 points; PyTorch 2.15
//! takes about 2,580 ms for the same step): 4,665 ms/step before, about 2,700 ms/step with the
//! thresholds raised; kernel (system) time fell from 19 s to 2.5 s over a 6-step run. The peak
//! resident set grows by about a tenth (870 → 960 MB for a 5-step run). A larger `M_TOP_PAD` made
//! no measurable difference, so it is left alone.
//!
//! This is a choice about the whole process (it changes how every allocation is served), so
//! only a binary's `main` makes it; libraries never call it implicitly.

/// The free space at the top of the heap glibc keeps instead of trimming: 1 GiB. Trimming
/// sooner (256 MiB) returned and re-faulted the 64 MiB tensors of a 64³ layer on every step
/// (`conv3d` bench `convdeconv_64to64_1x1_64`: 156 → 629 ms).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_BYTES: libc::c_int = 1 << 30;
/// Blocks from this size up are still mmapped and returned on free: 128 MiB, so DeepSDF's
/// 32 MiB activations and 64³ layers' 64 MiB tensors are reused, while the 256³ ConvDeconv's
/// 128–512 MiB activations do not fragment the heap: a 1 GiB threshold raised that step's peak
/// resident set from 8.5 to 9.8 GB with no measurable speed-up, and 64 MiB made the 64 MiB
/// tensors 4× slower.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_FROM_BYTES: libc::c_int = 128 << 20;

/// Makes glibc keep freed large blocks (tensors) for reuse instead of unmapping them and
/// faulting fresh zeroed pages in on the next allocation (see the [module docs](self)). Call it
/// once, first thing in `main` of a binary that trains; returns whether the settings were
/// applied (always `false` off Linux/glibc, where it does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; these two take any
        // non-negative `int` and are safe to set at any time, from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_FROM_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_on_glibc_and_allocation_still_works() {
        let applied = super::keep_freed_memory();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        // A block above glibc's default 32 MiB ceiling, freed and allocated again.
        for _ in 0..2 {
            let block = vec![1u8; 48 << 20];
            assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 48 << 20);
        }
    }
}
