//! The sizes of the DTU reading of the seed architecture, derived from the input shape: shared by
//! pf-train, which builds the networks in libtorch, and pf-export, which writes the same networks
//! as ONNX, so the two can never disagree on a kernel or an upsampling target.

/// Channels of every hidden convolution.
pub const HIDDEN_CHANNELS: i64 = 32;
/// Kernel size of every encoder, decoder and discriminator convolution but the heads.
pub const KERNEL: i64 = 5;
/// Slope of every LeakyReLU.
pub const LEAKY_SLOPE: f64 = 0.01;
/// Batch-norm epsilon (PyTorch's default, as the seed code).
pub const BATCH_NORM_EPSILON: f64 = 1e-5;

/// Spatial size after each of the three encoder blocks (conv k5 valid, then pool 2) along one axis.
pub fn encoder_sizes(size: i64) -> [i64; 3] {
    let first = (size - (KERNEL - 1)) / 2;
    let second = (first - (KERNEL - 1)) / 2;
    let third = (second - (KERNEL - 1)) / 2;
    [first, second, third]
}

/// Fails for inputs too small for three valid 5×5 convolutions each followed by 2×2 pooling.
pub fn check(height: i64, width: i64) -> Result<(), String> {
    for (name, size) in [("height", height), ("width", width)] {
        let sizes = encoder_sizes(size);
        if sizes[2] < 1 || sizes[1] - (KERNEL - 1) < 1 {
            return Err(format!(
                "cells of {name} {size} are too small for the encoder (three 5×5 valid \
                 convolutions each followed by 2×2 pooling need at least 36 pixels)"
            ));
        }
    }
    Ok(())
}

/// The kernel of the encoder's last convolution: whatever is left after three blocks.
pub fn head_kernel(height: i64, width: i64) -> [i64; 2] {
    [encoder_sizes(height)[2], encoder_sizes(width)[2]]
}

/// The sizes the decoder upsamples to after its first three blocks (each block's 5×5 convolution
/// with padding 4 then grows the map by 4, back to the encoder's sizes).
pub fn upsample_targets(height: i64, width: i64) -> [[i64; 2]; 3] {
    let [h1, h2, _] = encoder_sizes(height);
    let [w1, w2, _] = encoder_sizes(width);
    let shrink = KERNEL - 1;
    [
        [h2 - shrink, w2 - shrink],
        [h1 - shrink, w1 - shrink],
        [height - shrink, width - shrink],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_the_seed_input() {
        assert_eq!(encoder_sizes(68), [32, 14, 5]);
        assert_eq!(head_kernel(68, 68), [5, 5]);
        assert_eq!(upsample_targets(68, 68), [[10, 10], [28, 28], [64, 64]]);
        assert!(check(68, 68).is_ok());
        assert!(check(30, 68).unwrap_err().contains("height 30"));
    }
}
