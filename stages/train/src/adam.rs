//! Adam with coupled L2 weight decay (the update of `torch.optim.Adam(weight_decay=…)`, which the
//! seed used), written out so that its moments can be saved with the checkpoint and a resumed run
//! continues exactly where it stopped; plus gradient-norm clipping that never synchronises with
//! the device.

use tch::{nn, Kind, Tensor};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// The optimiser of one variable store.
#[derive(Debug)]
pub struct Adam {
    learning_rate: f64,
    weight_decay: f64,
    /// (name, parameter, first moment, second moment), sorted by name.
    slots: Vec<(String, Tensor, Tensor, Tensor)>,
    step: i64,
}

impl Adam {
    pub fn new(store: &nn::VarStore, learning_rate: f64, weight_decay: f64) -> Self {
        let mut variables: Vec<(String, Tensor)> = store
            .variables()
            .into_iter()
            .filter(|(_, tensor)| tensor.requires_grad())
            .collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = variables
            .into_iter()
            .map(|(name, parameter)| {
                let first = parameter.zeros_like().detach();
                let second = parameter.zeros_like().detach();
                (name, parameter, first, second)
            })
            .collect();
        Self {
            learning_rate,
            weight_decay,
            slots,
            step: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, parameter, _, _) in &mut self.slots {
            parameter.zero_grad();
        }
    }

    /// Scales the gradients so that their joint L2 norm is at most `max_norm` (as
    /// `clip_grad_norm_`, without reading the norm back to the host).
    pub fn clip_grad_norm(&mut self, max_norm: f64) {
        tch::no_grad(|| {
            let squares: Vec<Tensor> = self
                .slots
                .iter()
                .map(|(_, parameter, _, _)| parameter.grad())
                .filter(|grad| grad.defined())
                .map(|grad| grad.square().sum(Kind::Float))
                .collect();
            if squares.is_empty() {
                return;
            }
            let norm = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt();
            let coefficient = (norm + 1e-6)
                .reciprocal()
                .g_mul_scalar(max_norm)
                .clamp_max(1.0);
            for (_, parameter, _, _) in &self.slots {
                let mut grad = parameter.grad();
                if grad.defined() {
                    let _ = grad.g_mul_(&coefficient);
                }
            }
        });
    }

    pub fn step(&mut self) {
        self.step += 1;
        let bias_correction1 = 1.0 - BETA1.powi(self.step as i32);
        let bias_correction2 = 1.0 - BETA2.powi(self.step as i32);
        let step_size = self.learning_rate / bias_correction1;
        let root_correction2 = bias_correction2.sqrt();
        let weight_decay = self.weight_decay;
        tch::no_grad(|| {
            for (_, parameter, first, second) in &mut self.slots {
                let grad = parameter.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = if weight_decay != 0.0 {
                    grad + &*parameter * weight_decay
                } else {
                    grad
                };
                let _ = first.lerp_(&grad, 1.0 - BETA1);
                let _ = second.g_mul_scalar_(BETA2);
                let _ = second.g_add_(&(grad.square() * (1.0 - BETA2)));
                let denominator = second.sqrt() / root_correction2 + EPSILON;
                let _ = parameter.g_sub_(&(&*first / denominator * step_size));
            }
        });
    }

    /// The moments and step count as named tensors (for the training-state file).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut tensors = vec![(format!("{prefix}.step"), Tensor::from_slice(&[self.step]))];
        for (name, _, first, second) in &self.slots {
            tensors.push((format!("{prefix}.exp_avg.{name}"), first.shallow_clone()));
            tensors.push((
                format!("{prefix}.exp_avg_sq.{name}"),
                second.shallow_clone(),
            ));
        }
        tensors
    }

    /// Restores what [`Adam::state`] saved; a missing or misshapen tensor is an error naming it.
    pub fn load_state(
        &mut self,
        prefix: &str,
        find: &dyn Fn(&str) -> Option<Tensor>,
    ) -> Result<(), String> {
        let step_name = format!("{prefix}.step");
        let step = find(&step_name).ok_or_else(|| format!("missing tensor `{step_name}`"))?;
        self.step = step.int64_value(&[0]);
        tch::no_grad(|| {
            for (name, _, first, second) in &mut self.slots {
                for (kind, target) in [("exp_avg", &mut *first), ("exp_avg_sq", &mut *second)] {
                    let tensor_name = format!("{prefix}.{kind}.{name}");
                    let saved = find(&tensor_name)
                        .ok_or_else(|| format!("missing tensor `{tensor_name}`"))?;
                    if saved.size() != target.size() {
                        return Err(format!(
                            "tensor `{tensor_name}` has shape {:?}, the model needs {:?}",
                            saved.size(),
                            target.size()
                        ));
                    }
                    target.copy_(&saved);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_the_adam_update_by_hand() {
        // One parameter, two steps of the textbook update with coupled L2.
        let store = nn::VarStore::new(Device::Cpu);
        let parameter = store
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let mut adam = Adam::new(&store, 0.1, 0.01);
        let mut expected = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for step in 1..=2 {
            adam.zero_grad();
            (&parameter * &parameter).sum(Kind::Float).backward();
            adam.step();
            for i in 0..2 {
                let grad = 2.0 * expected[i] + 0.01 * expected[i];
                m[i] = 0.9 * m[i] + 0.1 * grad;
                v[i] = 0.999 * v[i] + 0.001 * grad * grad;
                let m_hat = m[i] / (1.0 - 0.9f64.powi(step));
                let v_hat_root = v[i].sqrt() / (1.0 - 0.999f64.powi(step)).sqrt();
                expected[i] -= 0.1 * m_hat / (v_hat_root + 1e-8);
            }
        }
        for (i, value) in expected.iter().enumerate() {
            assert!((parameter.double_value(&[i as i64]) - value).abs() < 1e-5);
        }
    }

    #[test]
    fn clipping_bounds_the_joint_norm() {
        let store = nn::VarStore::new(Device::Cpu);
        let parameter = store
            .root()
            .var_copy("w", &Tensor::from_slice(&[3.0f32, 4.0]));
        let mut adam = Adam::new(&store, 0.1, 0.0);
        adam.zero_grad();
        (&parameter * &parameter).sum(Kind::Float).backward(); // gradient (6, 8), norm 10
        adam.clip_grad_norm(5.0);
        let grad = parameter.grad();
        assert!((grad.double_value(&[0]) - 3.0).abs() < 1e-4);
        assert!((grad.double_value(&[1]) - 4.0).abs() < 1e-4);
    }
}
