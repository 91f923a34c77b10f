//! Reading the cortex-sphere fixture: whole-file parse (sparse) and parse + dense copy of the
//! active bounding box. Compare with `tools/bench/vdb_peer.py` (pyopenvdb) for the same work.
//! Skips when the fixtures folder is absent.

use criterion::{criterion_group, criterion_main, Criterion};
use vnr_formats::vdb::{read_vdb, BBox, DenseLimit};

fn bench(c: &mut Criterion) {
    let Some(path) = vnr_formats::testing::fixture("vdb/cortex-sphere.vdb") else {
        return;
    };
    c.bench_function("vdb_read_sparse cortex-sphere", |b| {
        b.iter(|| read_vdb(&path).expect("fixture reads"))
    });
    c.bench_function("vdb_read_dense cortex-sphere", |b| {
        b.iter(|| {
            let file = read_vdb(&path).expect("fixture reads");
            let grid = file.typed_grid::<f32>("ls_sphere").expect("float grid");
            let bbox = grid.active_bbox().unwrap_or(BBox::new([0; 3], [0; 3]));
            grid.to_dense(bbox, DenseLimit::default())
                .expect("dense copy")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
