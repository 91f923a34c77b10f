//! The torchinfo-style text and the shape-only parameter builder.

use candle_core::{DType, Device};
use vnr_models::convdeconv::{ConvDeconv, ConvDeconvConfig};
use vnr_models::summary::thousands;
use vnr_models::{shape_only_var_builder, Summary};

#[test]
fn thousands_groups_digits() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(48_271_745), "48,271,745");
}

#[test]
fn text_has_torchinfo_layout() {
    let mut s = Summary::new("Tiny", &[1, 3]);
    s.push("fc", "Linear", &[1, 4], 16);
    s.push("act", "ReLU", &[1, 4], 0);
    let text = s.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert_eq!(lines[0], "=".repeat(100));
    assert!(lines[1].starts_with("Layer (type: name)"));
    assert!(
        lines[3].starts_with("Tiny") && lines[3].contains("[1, 4]") && lines[3].ends_with("--")
    );
    assert!(lines[4].starts_with("├─Linear: fc") && lines[4].ends_with("16"));
    assert!(lines[5].starts_with("├─ReLU: act") && lines[5].ends_with("--"));
    // Columns line up: shapes start at the same offset on every row.
    let col = |l: &str| l.chars().position(|c| c == '[').expect("shape");
    assert_eq!(col(lines[3]), col(lines[4]));
    assert_eq!(lines[7], "Input shape: [1, 3]");
    assert_eq!(lines[8], "Total params: 16");
    assert_eq!(lines[10], "Non-trainable params: 0");
}

#[test]
fn shape_only_builder_counts_without_allocating() {
    // The 256³ v001 describes itself from broadcast zeros: 48,271,745 parameters, no storage.
    let vb = shape_only_var_builder(DType::F32, &Device::Cpu);
    let model = ConvDeconv::new(ConvDeconvConfig::v001(), vb).expect("model");
    let s = model.summary(5).expect("summary");
    assert_eq!(s.total_params(), 48_271_745);
    assert_eq!(s.input_shape, [5, 1, 256, 256, 256]);
    assert_eq!(s.output_shape, [5, 1, 256, 256]);
}
