//! `read_npy` / `read_npy_header` on arbitrary bytes (through a scratch file: the npy readers
//! take paths): never panics; the header agrees with the array; and an accepted array written
//! back by `write_npy_to` re-reads to the same bytes.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use scratch::ScratchFile;
use vnr_formats::npz::{read_npy, read_npy_header, write_npy_to, NpyArray};

fn npy_bytes(array: &NpyArray) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = write_npy_to(&mut out, array) {
        panic!("writing to a Vec failed: {e}");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = ScratchFile::new("npy", data) else {
        return;
    };
    let header = read_npy_header(file.path());
    let Ok(array) = read_npy(file.path()) else {
        return;
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => panic!("read_npy accepted what read_npy_header refused: {e}"),
    };
    assert_eq!(header.shape, array.shape());
    assert_eq!(header.dtype, array.dtype());
    assert_eq!(header.len(), array.len());
    // Round trip, compared as bytes so NaN payloads count as equal.
    let written = npy_bytes(&array);
    let Ok(again) = ScratchFile::new("npy", &written) else {
        return;
    };
    let reread = match read_npy(again.path()) {
        Ok(a) => a,
        Err(e) => panic!("our own npy output does not read back: {e}"),
    };
    assert_eq!(reread.shape(), array.shape());
    assert_eq!(npy_bytes(&reread), written);
});
