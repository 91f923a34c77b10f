//! `BinvoxGrid::from_bytes` on arbitrary bytes: never panics, and whatever it accepts survives a
//! write/read round trip unchanged (dims, values, version and transform).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnr_formats::binvox::BinvoxGrid;

fuzz_target!(|data: &[u8]| {
    let Ok(grid) = BinvoxGrid::from_bytes(data) else {
        return;
    };
    let reread = match BinvoxGrid::from_bytes(&grid.to_bytes()) {
        Ok(g) => g,
        Err(e) => panic!("our own output of an accepted grid does not read back: {e}"),
    };
    assert_eq!(reread.dims(), grid.dims());
    assert_eq!(reread.values(), grid.values());
    assert_eq!(reread, grid, "header fields changed in the round trip");
});
