//! `--device cpu|cuda|cuda:N` on the commands that run a model: parsing, and the clear error
//! (exit status 2) a build without the `cuda` feature gives for a CUDA device.

use crate::support::{stderr, vnr};

/// Every command that takes `--device`, with arguments that parse (the files need not exist:
/// the device is opened first).
const COMMANDS: [&[&str]; 3] = [
    &["train", "deepsdf", "missing-specs.json"],
    &[
        "sdf",
        "reconstruct",
        "--decoder",
        "missing",
        "--samples",
        "missing.npz",
        "--out",
        "m.ply",
    ],
    &[
        "mesh",
        "--decoder",
        "missing",
        "--index",
        "0",
        "--out",
        "m.ply",
    ],
];

fn run_with_device(command: &[&str], device: &str) -> std::process::Output {
    let mut args = command.to_vec();
    args.extend(["--device", device]);
    vnr(&args)
}

#[test]
fn device_argument_rejects_unknown_devices() {
    for command in COMMANDS {
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1"] {
            let out = run_with_device(command, bad);
            assert_eq!(out.status.code(), Some(2), "{command:?} --device {bad}");
            let err = stderr(&out);
            assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        }
    }
}

#[test]
fn device_cpu_is_accepted_and_the_default() {
    // Parsing succeeds; the run then fails on the missing input, not on the device.
    for command in COMMANDS {
        for args in [command.to_vec(), [command, &["--device", "CPU"]].concat()] {
            let out = vnr(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = stderr(&out);
            assert!(!err.contains("device"), "{args:?}: {err}");
            assert!(err.contains("missing"), "{args:?}: {err}");
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_names_the_feature() {
    for command in COMMANDS {
        for device in ["cuda", "cuda:0", "cuda:3"] {
            let out = run_with_device(command, device);
            assert_eq!(out.status.code(), Some(2), "{command:?} --device {device}");
            let err = stderr(&out);
            assert!(
                err.contains("built without CUDA support; rebuild with --features cuda"),
                "{err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
