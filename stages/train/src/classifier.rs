//! The supervised models of the second seed (CPJUMP1 treatment classification): its custom
//! three-block CNN and an ImageNet-style ResNet-18 (He et al. 2016, torchvision's layout) whose
//! first convolution takes any number of channels. Both take any square (or rectangular) input of
//! at least 32 px and end in logits over the classes.

use tch::nn::{self, Module, ModuleT};

use crate::init;
use tch::Tensor;

/// Which supervised architecture.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Three blocks of 3×3 convolution (32, 64, 128 filters), ReLU and 2×2 max pooling, dropout,
    /// one fully connected layer (the seed's "custom CNN").
    Cnn,
    /// ResNet-18: 7×7/2 convolution, 3×3/2 max pooling, four stages of two basic blocks (64, 128,
    /// 256, 512 filters), global average pooling, one fully connected layer.
    Resnet18,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Cnn => "cnn",
            Architecture::Resnet18 => "resnet18",
        }
    }
}

/// A classifier: images `[N, C, H, W]` in, logits `[N, classes]` out.
#[derive(Debug)]
pub enum Classifier {
    Cnn(Cnn),
    Resnet18(Box<ResNet18>),
}

impl Classifier {
    pub fn new(
        root: &nn::Path,
        architecture: Architecture,
        channels: i64,
        height: i64,
        width: i64,
        n_classes: i64,
        dropout: f64,
    ) -> Self {
        match architecture {
            Architecture::Cnn => {
                Classifier::Cnn(Cnn::new(root, channels, height, width, n_classes, dropout))
            }
            Architecture::Resnet18 => {
                Classifier::Resnet18(Box::new(ResNet18::new(root, channels, n_classes)))
            }
        }
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        match self {
            Classifier::Cnn(model) => model.forward_t(images, train),
            Classifier::Resnet18(model) => model.forward_t(images, train),
        }
    }
}

/// The smallest input side either architecture accepts (three 2× poolings, or ResNet's 32×
/// reduction, must leave at least one pixel).
pub const MIN_SIDE: i64 = 32;

#[derive(Debug)]
pub struct Cnn {
    convs: Vec<nn::Conv2D>,
    fc: nn::Linear,
    dropout: f64,
}

impl Cnn {
    fn new(
        root: &nn::Path,
        channels: i64,
        height: i64,
        width: i64,
        n_classes: i64,
        dropout: f64,
    ) -> Self {
        let filters = [32i64, 64, 128];
        let mut convs = Vec::new();
        let mut input = channels;
        for (index, &output) in filters.iter().enumerate() {
            convs.push(init::conv2d(
                root / format!("conv{}", index + 1),
                init::ConvShape {
                    input,
                    output,
                    kernel: [3, 3],
                    stride: 1,
                    padding: 1,
                    bias: true,
                },
                init::ConvInit::Pytorch,
            ));
            input = output;
        }
        let flat = input * (height / 8) * (width / 8);
        Self {
            convs,
            fc: init::linear(root / "fc", flat, n_classes),
            dropout,
        }
    }
}

impl ModuleT for Cnn {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let mut x = images.shallow_clone();
        for conv in &self.convs {
            x = conv
                .forward(&x)
                .relu()
                .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        x.flatten(1, -1)
            .dropout(self.dropout, train)
            .apply(&self.fc)
    }
}

fn conv(
    root: nn::Path,
    input: i64,
    output: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    init::conv2d(
        root,
        init::ConvShape {
            input,
            output,
            kernel: [kernel, kernel],
            stride,
            padding,
            bias: false,
        },
        init::ConvInit::ResnetFanOut,
    )
}

/// Two 3×3 convolutions with batch normalisation and an identity (or 1×1/stride projection)
/// shortcut.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(root: &nn::Path, input: i64, output: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || input != output).then(|| {
            (
                conv(root / "downsample" / "0", input, output, 1, stride, 0),
                init::batch_norm2d(root / "downsample" / "1", output),
            )
        });
        Self {
            conv1: conv(root / "conv1", input, output, 3, stride, 1),
            bn1: init::batch_norm2d(root / "bn1", output),
            conv2: conv(root / "conv2", output, output, 3, 1, 1),
            bn2: init::batch_norm2d(root / "bn2", output),
            downsample,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let shortcut = match &self.downsample {
            Some((conv, bn)) => x.apply(conv).apply_t(bn, train),
            None => x.shallow_clone(),
        };
        (out + shortcut).relu()
    }
}

/// ResNet-18 with torchvision's parameter names (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`).
#[derive(Debug)]
pub struct ResNet18 {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<BasicBlock>,
    fc: nn::Linear,
}

impl ResNet18 {
    fn new(root: &nn::Path, channels: i64, n_classes: i64) -> Self {
        let mut layers = Vec::new();
        let mut input = 64;
        for (stage, &output) in [64i64, 128, 256, 512].iter().enumerate() {
            for block in 0..2 {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let path = root / format!("layer{}", stage + 1) / block.to_string();
                layers.push(BasicBlock::new(&path, input, output, stride));
                input = output;
            }
        }
        Self {
            conv1: conv(root / "conv1", channels, 64, 7, 2, 3),
            bn1: init::batch_norm2d(root / "bn1", 64),
            layers,
            fc: init::linear(root / "fc", 512, n_classes),
        }
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let mut x = images
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.layers {
            x = block.forward_t(&x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn build(
        architecture: Architecture,
        channels: i64,
        side: i64,
        classes: i64,
    ) -> (nn::VarStore, Classifier) {
        let store = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(
            &store.root(),
            architecture,
            channels,
            side,
            side,
            classes,
            0.5,
        );
        (store, model)
    }

    #[test]
    fn resnet18_matches_the_standard_architecture() {
        // torchvision.models.resnet18(): 11,689,512 parameters for 3×224×224 and 1000 classes.
        let (store, model) = build(Architecture::Resnet18, 3, 224, 1000);
        assert_eq!(crate::model::parameter_count(&store), 11_689_512);
        let names: Vec<String> = store.variables().into_keys().collect();
        for name in [
            "conv1.weight",
            "bn1.running_mean",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
            "fc.weight",
        ] {
            assert!(names.iter().any(|n| n == name), "no variable {name}");
        }
        let logits = tch::no_grad(|| {
            model.forward_t(
                &Tensor::zeros([2, 3, 224, 224], (Kind::Float, Device::Cpu)),
                false,
            )
        });
        assert_eq!(logits.size(), [2, 1000]);
        // One grey channel: only conv1 changes (64 × 7 × 7 × 2 fewer weights).
        let (grey, _) = build(Architecture::Resnet18, 1, 128, 1000);
        assert_eq!(
            crate::model::parameter_count(&grey),
            11_689_512 - 64 * 49 * 2
        );
    }

    #[test]
    fn cnn_takes_any_channel_count_and_size() {
        for (channels, side) in [(1, 128), (5, 64), (3, 36)] {
            let (store, model) = build(Architecture::Cnn, channels, side, 7);
            let logits = tch::no_grad(|| {
                model.forward_t(
                    &Tensor::zeros([3, channels, side, side], (Kind::Float, Device::Cpu)),
                    false,
                )
            });
            assert_eq!(logits.size(), [3, 7]);
            let flat = 128 * (side / 8) * (side / 8);
            let expected =
                (channels * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + flat * 7 + 7;
            assert_eq!(crate::model::parameter_count(&store) as i64, expected);
        }
    }
}
