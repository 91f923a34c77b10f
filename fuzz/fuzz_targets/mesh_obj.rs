//! `TriangleMesh::read_obj_from` on arbitrary bytes: never panics, and an accepted mesh holds
//! its invariants (indices in range, finite positions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnr_formats::mesh::TriangleMesh;

fuzz_target!(|data: &[u8]| {
    if let Ok(mesh) = TriangleMesh::read_obj_from(&mut std::io::Cursor::new(data)) {
        if let Err(e) = mesh.validate() {
            panic!("the OBJ reader returned an invalid mesh: {e}");
        }
        let _ = mesh.edge_stats();
    }
});
