//! The training state on the device: the f32 master copies and AdamW moments of the trained
//! tensors, next to their device gradients, updated by the AdamW kernel (cuda/adamw.cu) with the
//! gradient clipping folded in. The host sees them only when it asks: at checkpoints and at the end.

use crate::backend::device_weights::{allocating, DeviceGrads, DeviceParam, DeviceWeights};
use crate::error::Result;
use crate::kernels::{adamw_step, clip_coefficient, grad_norm, AdamwTensor, Buffer, Device};
use crate::model::{LlamaWeights, Param, ParamId, TrainableSet};
use crate::train::optim::{AdamW, AdamWConfig};

/// The optimizer's state of one trained tensor.
struct TensorState {
    /// The f32 master weights of a tensor whose device copy is bf16; none for an RMSNorm weight,
    /// whose device copy is f32 and is its own master.
    master: Option<Buffer<f32>>,
    m: Buffer<f32>,
    v: Buffer<f32>,
}

/// AdamW on the device over the tensors one trainable set trains.
pub struct DeviceOptimizer {
    config: AdamWConfig,
    /// Updates done so far (AdamW's `t`).
    step: u64,
    state: LlamaWeights<Option<TensorState>>,
}

impl TensorState {
    /// The f32 values AdamW updates: the master copy, or the f32 device copy itself.
    fn master<'a>(&'a self, param: &'a DeviceParam) -> &'a Buffer<f32> {
        self.master.as_ref().unwrap_or_else(|| param.f32())
    }
}

impl DeviceOptimizer {
    /// Zero moments and master copies of `weights` (the host's current values) for the tensors
    /// `set` trains.
    pub fn new(
        device: &Device,
        weights: &LlamaWeights<Param<f32>>,
        set: TrainableSet,
        config: AdamWConfig,
    ) -> Result<Self> {
        let state = weights.try_map(|id, p| -> Result<_> {
            if !set.trains(id) {
                return Ok(None);
            }
            let state = || -> Result<_> {
                let master = match id {
                    ParamId::Norm(_) => None,
                    _ => Some(device.upload(&p.data)?),
                };
                let n = p.data.len();
                Ok(Some(TensorState {
                    master,
                    m: device.zeros(n)?,
                    v: device.zeros(n)?,
                }))
            };
            state().map_err(|e| allocating(e, format!("for the AdamW state of {}", id.hf_name())))
        })?;
        Ok(DeviceOptimizer {
            config,
            step: 0,
            state,
        })
    }

    /// Continues from `optimizer` (a checkpoint's moments, in parameter order).
    pub fn load_moments(&mut self, device: &Device, optimizer: &AdamW) -> Result<()> {
        let mut tensors = self.state.present_mut();
        optimizer.check_sizes(&tensors.iter().map(|(_, t)| t.m.len()).collect::<Vec<_>>())?;
        for ((_, t), (m, v)) in tensors.iter_mut().zip(optimizer.m.iter().zip(&optimizer.v)) {
            device.write(&mut t.m, m)?;
            device.write(&mut t.v, v)?;
        }
        self.config = optimizer.config;
        self.step = optimizer.step;
        Ok(())
    }

    /// The moments on the host, in parameter order.
    pub fn download(&self, device: &Device) -> Result<AdamW> {
        let mut host = AdamW::new(self.config, &[]);
        host.step = self.step;
        for (_, t) in self.state.present() {
            host.m.push(device.download(&t.m)?);
            host.v.push(device.download(&t.v)?);
        }
        Ok(host)
    }

    /// Copies the trained tensors' f32 values into the host's `weights`.
    pub fn download_trained(
        &self,
        device: &Device,
        params: &DeviceWeights,
        weights: &mut LlamaWeights<Param<f32>>,
    ) -> Result<()> {
        for (id, t) in self.state.present() {
            let param = params.param(id).expect("the device holds every tensor");
            let host = weights.param_mut(id).expect("the host holds every tensor");
            host.data = device.download(t.master(param))?;
        }
        Ok(())
    }

    /// Overwrites the master copies with the host's `weights` (the device copies are written by
    /// the caller).
    pub fn upload_masters(
        &mut self,
        device: &Device,
        weights: &LlamaWeights<Param<f32>>,
    ) -> Result<()> {
        for (id, t) in self.state.present_mut() {
            if let Some(master) = t.master.as_mut() {
                let host = weights.param(id).expect("the host holds every tensor");
                device.write(master, &host.data)?;
            }
        }
        Ok(())
    }

    /// One AdamW update at learning rate `lr` of every trained tensor from its gradient scaled to a
    /// global norm of at most `max_grad_norm`; the bf16 device copies are rewritten in the same
    /// launch. Returns the norm before clipping and the clipping factor.
    pub fn step(
        &mut self,
        device: &Device,
        params: &mut DeviceWeights,
        grads: &DeviceGrads,
        lr: f64,
        max_grad_norm: f64,
    ) -> Result<(f64, f32)> {
        let trained = grads.present();
        let norm = grad_norm(device, &trained.iter().map(|&(_, g)| g).collect::<Vec<_>>())?;
        let scale = clip_coefficient(norm, max_grad_norm);
        let mut params_of = Vec::with_capacity(trained.len());
        params.visit_mut(|id, p| {
            if let Some(Some(_)) = grads.param(id) {
                params_of.push(p);
            }
        });
        let tensors = params_of
            .into_iter()
            .zip(trained)
            .zip(self.state.present_mut());
        let mut tensors: Vec<AdamwTensor> = tensors
            .map(|((param, (_, grad)), (_, t))| {
                let (master, copy) = match (t.master.as_mut(), param) {
                    (Some(master), DeviceParam::Bf16(copy)) => (master, Some(copy)),
                    (None, DeviceParam::F32(value)) => (value, None),
                    _ => unreachable!("an f32 master exactly for the bf16 device copies"),
                };
                AdamwTensor {
                    param: master,
                    grad,
                    m: &mut t.m,
                    v: &mut t.v,
                    param_bf16: copy,
                }
            })
            .collect();
        let step = self.step + 1;
        adamw_step(device, &mut tensors, &self.config, step, lr, scale)?;
        self.step = step;
        Ok((norm, scale))
    }
}
