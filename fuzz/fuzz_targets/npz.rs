//! `NpzReader` on arbitrary bytes (through a scratch file: it takes paths): open, list the keys,
//! read every header and array. Errors are fine, panics are not; a header read alone must agree
//! with the array read.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use scratch::ScratchFile;
use vnr_formats::npz::NpzReader;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = ScratchFile::new("npz", data) else {
        return;
    };
    let Ok(mut reader) = NpzReader::open(file.path()) else {
        return;
    };
    for key in reader.keys().to_vec() {
        let header = reader.header(&key);
        if let Ok(array) = reader.array(&key) {
            let header = match header {
                Ok(h) => h,
                Err(e) => panic!("array '{key}' read but its header alone did not: {e}"),
            };
            assert_eq!(header.shape, array.shape());
            assert_eq!(header.dtype, array.dtype());
        }
    }
});
