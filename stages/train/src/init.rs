//! Layers initialised as the seeds' PyTorch code initialised them, not as tch does.
//!
//! tch's defaults differ from `torch.nn`'s: its convolutions and linear layers draw weights from
//! U(±√(6/fan_in)) (Kaiming uniform for ReLU) where PyTorch uses `kaiming_uniform_(a=√5)`, i.e.
//! U(±1/√fan_in); its convolution biases start at 0 where PyTorch draws them from U(±1/√fan_in);
//! its batch-norm scales are drawn from U(0, 1) where PyTorch sets them to 1. The seed models
//! were trained from PyTorch's defaults, and torchvision's ResNet-18 overrides them with its own
//! (`kaiming_normal_(mode="fan_out", nonlinearity="relu")` for convolutions, scale 1 and shift 0
//! for batch norms, PyTorch's default for the final linear layer). Every layer pf-train builds
//! goes through this module. `tests/python/check_init.py` compares the drawn weights with
//! `torch.nn` layers (and torchvision's ResNet-18) of the same shapes.

use tch::nn::{self, Init};

/// How a convolution's weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvInit {
    /// `torch.nn.Conv2d`'s default: weight and bias U(±1/√fan_in).
    Pytorch,
    /// torchvision's ResNet: weight N(0, 2/fan_out), fan_out = out_channels · kernel area.
    ResnetFanOut,
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub input: i64,
    pub output: i64,
    pub kernel: [i64; 2],
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
}

/// U(±1/√fan_in), PyTorch's default for weights (kaiming_uniform_ with a = √5) and biases.
fn fan_in_uniform(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 2-D convolution initialised as `init` says.
pub fn conv2d(path: nn::Path, shape: ConvShape, init: ConvInit) -> nn::Conv2D {
    let fan_in = shape.input * shape.kernel[0] * shape.kernel[1];
    let ws_init = match init {
        ConvInit::Pytorch => fan_in_uniform(fan_in),
        ConvInit::ResnetFanOut => Init::Randn {
            mean: 0.0,
            stdev: (2.0 / (shape.output * shape.kernel[0] * shape.kernel[1]) as f64).sqrt(),
        },
    };
    let config = nn::ConvConfigND::<[i64; 2]> {
        stride: [shape.stride, shape.stride],
        padding: [shape.padding, shape.padding],
        bias: shape.bias,
        ws_init,
        bs_init: fan_in_uniform(fan_in),
        ..Default::default()
    };
    nn::conv(path, shape.input, shape.output, shape.kernel, config)
}

/// `torch.nn.BatchNorm2d`: scale 1, shift 0, eps 1e-5, momentum 0.1.
pub fn batch_norm2d(path: nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: Init::Const(1.0),
        bs_init: Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(path, channels, config)
}

/// `torch.nn.Linear`: weight and bias U(±1/√in).
pub fn linear(path: nn::Path, input: i64, output: i64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: fan_in_uniform(input),
        bs_init: Some(fan_in_uniform(input)),
        bias: true,
    };
    nn::linear(path, input, output, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn bounds_and_constants_are_pytorchs() {
        tch::manual_seed(0);
        let store = nn::VarStore::new(Device::Cpu);
        let shape = ConvShape {
            input: 32,
            output: 64,
            kernel: [4, 4],
            stride: 1,
            padding: 0,
            bias: true,
        };
        let conv = conv2d(store.root() / "c", shape, ConvInit::Pytorch);
        let bound = 1.0 / (32.0f64 * 16.0).sqrt();
        assert!(conv.ws.abs().max().double_value(&[]) <= bound);
        assert!(conv.ws.abs().max().double_value(&[]) > 0.95 * bound);
        let bias = conv.bs.as_ref().unwrap();
        assert!(bias.abs().max().double_value(&[]) <= bound);
        assert!(bias.abs().max().double_value(&[]) > 0.5 * bound);
        let norm = batch_norm2d(store.root() / "n", 8);
        assert_eq!(norm.ws.as_ref().unwrap().min().double_value(&[]), 1.0);
        assert_eq!(norm.ws.as_ref().unwrap().max().double_value(&[]), 1.0);
        let resnet = conv2d(store.root() / "r", shape, ConvInit::ResnetFanOut);
        let std = resnet.ws.std(true).double_value(&[]);
        let expected = (2.0f64 / (64.0 * 16.0)).sqrt();
        assert!((std / expected - 1.0).abs() < 0.05, "{std} vs {expected}");
    }

    /// Every tensor of every model pf-train builds, drawn and then compared with `torch.nn` /
    /// torchvision by `tests/python/check_init.py` (the project's venv, as `make test` has it).
    #[test]
    fn every_model_starts_from_pytorchs_distributions() {
        use crate::classifier::{Architecture, Classifier};
        use crate::model::{Discriminator, Geometry, Vae};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("PHENOFLOW_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        let script = root.join("tests/python/check_init.py");
        let temp = tempfile::tempdir().unwrap();
        let geometry = Geometry {
            channels: 3,
            height: 68,
            width: 68,
            latent_dim: 256,
        };
        type Build = Box<dyn Fn(&nn::Path)>;
        let builds: Vec<(&str, Build, Vec<&str>)> = vec![
            (
                "sparsevaegan",
                Box::new(move |root: &nn::Path| {
                    let _ = Vae::new(
                        root / "vae",
                        phenoflow_schemas::ModelKind::SparseVaeGan,
                        geometry,
                        10.0,
                    );
                    let _ = Discriminator::new(root / "discriminator", geometry);
                }),
                vec![],
            ),
            (
                "cnn",
                Box::new(|root: &nn::Path| {
                    let _ = Classifier::new(root, Architecture::Cnn, 3, 64, 64, 12, 0.5);
                }),
                vec![],
            ),
            (
                "resnet18",
                Box::new(|root: &nn::Path| {
                    let _ = Classifier::new(root, Architecture::Resnet18, 3, 64, 64, 12, 0.5);
                }),
                vec!["--resnet18", "12"],
            ),
        ];
        for (name, build, extra) in builds {
            tch::manual_seed(1);
            let store = nn::VarStore::new(Device::Cpu);
            build(&store.root());
            let path = temp.path().join(format!("{name}.npz"));
            let tensors = crate::checkpoint::named_tensors(&store, "");
            tch::Tensor::write_npz(&tensors, &path).unwrap();
            let output = std::process::Command::new(&python)
                .arg(&script)
                .arg(&path)
                .args(extra)
                .output()
                .expect("the project's Python runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{name}:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(stdout.contains("OK: "), "{stdout}");
        }
    }
}
