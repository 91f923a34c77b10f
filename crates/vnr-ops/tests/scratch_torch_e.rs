// SCRATCH (not to be committed): compares against torch outputs in /tmp/e_scratch/cases.json.
use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use vnr_ops::cumulative::cumprod;
use vnr_ops::embedding::{harmonic_embedding, HarmonicEmbeddingParams};
use vnr_ops::grid_sample::*;
use vnr_ops::raymarch::{ea_raymarch, EaRaymarchParams};

fn v(c: &Value, k: &str) -> Vec<f64> { c[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() }
fn s(c: &Value, k: &str) -> Vec<usize> { c[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect() }
fn t(c: &Value, k: &str, sh: &str, dt: DType) -> Tensor { Tensor::from_vec(v(c,k), s(c,sh), &Device::Cpu).unwrap().to_dtype(dt).unwrap() }
fn maxdiff(a: &Tensor, b: &[f64]) -> f64 { let a: Vec<f64> = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap(); a.iter().zip(b).map(|(x,y)| (x-y).abs()).fold(0.0, f64::max) }

#[test]
fn torch() {
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string("/tmp/e_scratch/cases.json").unwrap()).unwrap();
    for c in &cases {
        match c["op"].as_str().unwrap() {
            "grid" => {
                let dt = if c["dtype"] == "torch.float64" { DType::F64 } else { DType::F32 };
                let p = GridSampleParams { mode: if c["mode"]=="nearest" {GridSampleMode::Nearest} else {GridSampleMode::Bilinear}, padding_mode: if c["pad"]=="border" {GridPaddingMode::Border} else {GridPaddingMode::Zeros}, align_corners: c["ac"].as_bool().unwrap() };
                let x = Var::from_tensor(&t(c,"x","xs",dt)).unwrap(); let g = Var::from_tensor(&t(c,"g","gs",dt)).unwrap();
                let y = grid_sample3d(x.as_tensor(), g.as_tensor(), &p).unwrap();
                let go = Tensor::from_vec(v(c,"go"), y.shape(), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                let gr = (y.clone()*go).unwrap().sum_all().unwrap().backward().unwrap();
                println!("grid {:?} {:?}: y {:.2e} gx {:.2e} gg {:.2e}", dt, p, maxdiff(&y, &v(c,"y")), maxdiff(gr.get(x.as_tensor()).unwrap(), &v(c,"gx")), maxdiff(gr.get(g.as_tensor()).unwrap(), &v(c,"gg")));
            }
            "cumprod" => {
                let x = Var::from_tensor(&t(c,"x","xs",DType::F64)).unwrap();
                let y = cumprod(x.as_tensor(), c["dim"].as_u64().unwrap() as usize, false).unwrap();
                let go = Tensor::from_vec(v(c,"go"), y.shape(), &Device::Cpu).unwrap();
                let gr = (y.clone()*go).unwrap().sum_all().unwrap().backward().unwrap();
                println!("cumprod dim {}: y {:.2e} gx {:.2e}", c["dim"], maxdiff(&y,&v(c,"y")), maxdiff(gr.get(x.as_tensor()).unwrap(), &v(c,"gx")));
            }
            "ea" => {
                let d = Var::from_tensor(&t(c,"d","ds",DType::F64)).unwrap(); let f = Var::from_tensor(&t(c,"f","fs",DType::F64)).unwrap();
                let p = EaRaymarchParams { surface_thickness: c["s"].as_u64().unwrap() as usize, eps: 1e-10 };
                let y = ea_raymarch(d.as_tensor(), f.as_tensor(), &p).unwrap();
                let go = Tensor::from_vec(v(c,"go"), y.shape(), &Device::Cpu).unwrap();
                let gr = (y.clone()*go).unwrap().sum_all().unwrap().backward().unwrap();
                println!("ea s {}: y {:.2e} gd {:.2e} gf {:.2e}", c["s"], maxdiff(&y,&v(c,"y")), maxdiff(gr.get(d.as_tensor()).unwrap(), &v(c,"gd")), maxdiff(gr.get(f.as_tensor()).unwrap(), &v(c,"gf")));
            }
            "harm" => {
                let p = HarmonicEmbeddingParams { n_harmonic_functions: 6, omega_0: 0.7, logspace: c["logspace"].as_bool().unwrap(), append_input: true };
                let fr: Vec<f64> = p.frequencies().iter().map(|&x| x as f64).collect();
                let y = harmonic_embedding(&t(c,"x","xs",DType::F32), &p).unwrap();
                println!("harm {}: y {:.2e} freqs {:?} vs {:?}", c["logspace"], maxdiff(&y,&v(c,"y")), fr, v(c,"fr"));
            }
            _ => unreachable!(),
        }
    }
}
