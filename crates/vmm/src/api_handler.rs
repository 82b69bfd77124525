//! Answers control-API requests against the running machine.

use serde::Serialize;
use vmm_api::routes::{ApiError, ApiRequest};
use vmm_api::types::{PingResponse, VmInfo, VmState};

use crate::api::ApiReply;
use crate::events::StopReason;
use crate::vm::{Boot, Machine};

fn json(value: impl Serialize) -> ApiReply {
    serde_json::to_value(value).map(Some).map_err(|e| ApiError {
        status: 500,
        message: format!("cannot encode the response: {e}"),
    })
}

fn conflict(message: &str) -> ApiReply {
    Err(ApiError {
        status: 409,
        message: message.to_string(),
    })
}

impl Machine {
    /// Sets the balloon so that the guest keeps `target_mib` MiB.
    fn set_balloon(&self, target_mib: u64) -> ApiReply {
        let Some(balloon) = &self.devices.pci.balloon else {
            return Err(ApiError {
                status: 400,
                message: "this VM has no balloon device (start it with --balloon)".to_string(),
            });
        };
        let ram_bytes = self.config.memory.bytes();
        let pages =
            virtio::balloon::pages_for_target_mib(target_mib, ram_bytes).map_err(|e| ApiError {
                status: 400,
                message: format!("target_mib {target_mib}: {e}"),
            })?;
        balloon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .device_mut()
            .set_target_pages(pages);
        Ok(None)
    }

    /// Handles one request; the VM keeps running whatever the outcome.
    pub(crate) fn handle_api(&mut self, boot: &Boot, request: ApiRequest) -> ApiReply {
        let paused = boot.threads.is_paused();
        match request {
            ApiRequest::Ping => json(PingResponse::current()),
            ApiRequest::Info => json(VmInfo {
                state: if paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
                config: self.config.clone(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                boots: self.boots,
            }),
            ApiRequest::Pause if paused => conflict("the VM is already paused"),
            ApiRequest::Pause => {
                boot.threads.pause();
                self.devices.quiesce();
                Ok(None)
            }
            ApiRequest::Resume if !paused => conflict("the VM is not paused"),
            ApiRequest::Resume => {
                self.devices.resume();
                boot.threads.resume();
                Ok(None)
            }
            ApiRequest::Shutdown if paused => {
                conflict("the VM is paused: resume it first, so the guest can see the power button")
            }
            ApiRequest::Shutdown => {
                self.devices.press_power_button();
                Ok(None)
            }
            ApiRequest::Reboot => {
                self.latch.request(StopReason::Restart(
                    "reboot requested through the control API".to_string(),
                ));
                Ok(None)
            }
            ApiRequest::PowerOff => {
                self.latch.request(StopReason::PowerOff);
                Ok(None)
            }
            ApiRequest::Counters => json(self.counters.snapshot()),
            ApiRequest::Balloon(request) => self.set_balloon(request.target_mib),
            ApiRequest::Snapshot(request) => self.snapshot(boot, &request),
        }
    }
}
